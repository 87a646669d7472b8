// A program whose fast path cannot start (run with FASTNET_IFACE naming a missing
// interface): it installs a SIGUSR1 handler, opens a socket (the shim tries to start the
// fast path there and falls back to the kernel), then reads the handler back from the
// kernel and raises the signal. Prints what it saw; exit 0 when all was as without the shim.
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t ran;
static void on_usr1(int sig) { ran += sig == SIGUSR1; }

static const char *who(void) {
    struct sigaction old;
    if (sigaction(SIGUSR1, NULL, &old) != 0) return "error";
    return old.sa_handler == on_usr1 ? "ours" : "someone else's";
}

int main(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGUSR1, &sa, NULL) != 0) return 2;
    printf("before socket: handler %s\n", who());
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 3;
    close(fd);
    printf("after socket: handler %s\n", who());
    raise(SIGUSR1);
    printf("handler ran %d time(s)\n", (int)ran);
    return ran == 1 ? 0 : 1;
}
