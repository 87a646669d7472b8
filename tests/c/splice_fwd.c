/* A TCP forwarder in HAProxy's splice pattern: accept one client, connect to the
 * backend, and move bytes both ways only with splice(2) through a pipe per direction
 * (nonblocking sockets, SPLICE_F_MOVE|SPLICE_F_NONBLOCK|SPLICE_F_MORE, poll). A
 * direction whose source ended is shut down on the other side once its pipe is empty;
 * prints "forwarded UP DOWN" (bytes client->backend, backend->client) and exits 0.
 *   splice_fwd LISTEN_PORT BACKEND_IP BACKEND_PORT */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define FLAGS (SPLICE_F_MOVE | SPLICE_F_NONBLOCK | SPLICE_F_MORE)

struct way {
    int from, to;
    int p[2];
    size_t cap, in_pipe;
    int eof, shut;
    unsigned long long bytes;
};

static void die(const char *what) {
    fprintf(stderr, "splice_fwd: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void nonblocking(int fd) {
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
        die("fcntl");
}

/* One round of a direction: fill its pipe from the source, drain it into the sink. */
static void pump(struct way *w) {
    if (!w->eof && w->in_pipe < w->cap) {
        ssize_t n = splice(w->from, NULL, w->p[1], NULL, w->cap - w->in_pipe, FLAGS);
        if (n > 0) {
            w->in_pipe += n;
            w->bytes += n;
        } else if (n == 0) {
            w->eof = 1;
        } else if (errno != EAGAIN) {
            die("splice socket->pipe");
        }
    }
    if (w->in_pipe > 0) {
        ssize_t n = splice(w->p[0], NULL, w->to, NULL, w->in_pipe, FLAGS);
        if (n > 0)
            w->in_pipe -= n;
        else if (n == 0 || errno != EAGAIN)
            die("splice pipe->socket");
    }
    if (w->eof && w->in_pipe == 0 && !w->shut) {
        shutdown(w->to, SHUT_WR);
        w->shut = 1;
    }
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: splice_fwd LISTEN_PORT BACKEND_IP BACKEND_PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 16) < 0)
        die("listen");
    int c = accept(l, NULL, NULL);
    if (c < 0)
        die("accept");
    int b = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in ba = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
    inet_pton(AF_INET, argv[2], &ba.sin_addr);
    if (connect(b, (struct sockaddr *)&ba, sizeof ba) < 0)
        die("connect");
    nonblocking(c);
    nonblocking(b);
    struct way up = {.from = c, .to = b}, down = {.from = b, .to = c};
    struct way *ways[2] = {&up, &down};
    for (int i = 0; i < 2; i++) {
        if (pipe(ways[i]->p) < 0)
            die("pipe");
        ways[i]->cap = fcntl(ways[i]->p[0], F_GETPIPE_SZ);
    }
    while (!(up.shut && down.shut)) {
        struct pollfd pf[2] = {{.fd = c}, {.fd = b}};
        for (int i = 0; i < 2; i++) {
            struct way *w = ways[i];
            short *from = &pf[w->from == c ? 0 : 1].events;
            short *to = &pf[w->to == c ? 0 : 1].events;
            if (!w->eof && w->in_pipe < w->cap)
                *from |= POLLIN;
            if (w->in_pipe > 0)
                *to |= POLLOUT;
        }
        if (poll(pf, 2, 10000) == 0) {
            fprintf(stderr, "splice_fwd: stalled: up %llu (pipe %zu) down %llu (pipe %zu)\n",
                    up.bytes, up.in_pipe, down.bytes, down.in_pipe);
            return 1;
        }
        pump(&up);
        pump(&down);
    }
    printf("forwarded %llu %llu\n", up.bytes, down.bytes);
    fflush(stdout);
    close(c);
    close(b);
    return 0;
}
