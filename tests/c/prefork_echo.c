/* A prefork echo server: the parent listens and forks N children that all accept on
 * the one listener they inherited (Apache's prefork MPM, PostgreSQL-style servers);
 * each child echoes every connection until the peer closes it. SIGTERM to the parent
 * ends the children (each exits normally, so at-exit work runs), then the parent.
 *   prefork_echo PORT CHILDREN */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

static void serve(int l) {
    static char buf[65536];
    while (!stop) {
        int c = accept(l, NULL, NULL);
        if (c < 0)
            continue;
        unsigned long total = 0;
        for (;;) {
            ssize_t n = read(c, buf, sizeof buf);
            if (n <= 0)
                break;
            for (ssize_t off = 0; off < n;) {
                ssize_t w = write(c, buf + off, n - off);
                if (w <= 0)
                    goto done;
                off += w;
            }
            total += n;
        }
    done:
        printf("pid %d echoed %lu\n", (int)getpid(), total);
        fflush(stdout);
        close(c);
    }
    exit(0);
}

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    int port = atoi(argv[1]), n = atoi(argv[2]);
    pid_t kids[64];
    if (n < 1 || n > 64)
        return 2;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term; /* no SA_RESTART: accept and wait return EINTR */
    sigaction(SIGTERM, &sa, NULL);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 128)) {
        perror("listen");
        return 1;
    }
    for (int i = 0; i < n; i++) {
        kids[i] = fork();
        if (kids[i] == 0)
            serve(l);
        printf("child %d\n", (int)kids[i]);
    }
    fflush(stdout);
    while (!stop)
        pause();
    for (int i = 0; i < n; i++)
        kill(kids[i], SIGTERM);
    for (int i = 0; i < n; i++) {
        int st;
        while (waitpid(kids[i], &st, 0) < 0 && errno == EINTR)
            ;
    }
    return 0;
}
