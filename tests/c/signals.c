// Signal handlers that make system calls, returning through rt_sigreturn: raised
// signals, a handler on an alternate signal stack, and a SIGALRM storm (1000/s for
// 1 s; over 100 must be handled even on a busy machine) interrupting a loop of system calls.
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

static volatile sig_atomic_t usr1, alrm, onstack_ok;
static char altstack[64 * 1024];

static void on_usr1(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)uc;
    if (si->si_pid == getpid() && syscall(SYS_getppid) > 0) usr1++;
}

static void on_usr2(int sig) {
    (void)sig;
    char probe;
    onstack_ok = &probe >= altstack && &probe < altstack + sizeof altstack;
}

static void on_alrm(int sig) {
    (void)sig;
    int saved = errno;
    char c = 'x';
    if (write(-1, &c, 1) < 0 && getppid() > 0) alrm++;
    errno = saved;
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR1, &sa, NULL);
    for (int i = 0; i < 1000; i++) kill(getpid(), SIGUSR1);
    printf("SIGUSR1: %d of 1000 handled\n", (int)usr1);

    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
    sigaltstack(&ss, NULL);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sa.sa_flags = SA_ONSTACK;
    sigaction(SIGUSR2, &sa, NULL);
    raise(SIGUSR2);
    printf("SIGUSR2 on the alternate stack: %s\n", onstack_ok ? "yes" : "no");

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alrm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 1000}, {0, 1000}};
    setitimer(ITIMER_REAL, &it, NULL);
    int fds[2];
    if (pipe(fds)) return 1;
    long loops = 0, bad = 0;
    struct timeval start, now;
    gettimeofday(&start, NULL);
    do {
        char buf[16] = "0123456789abcdef", back[16];
        if (write(fds[1], buf, 16) != 16 || read(fds[0], back, 16) != 16 ||
            memcmp(buf, back, 16))
            bad++;
        loops++;
        gettimeofday(&now, NULL);
    } while ((now.tv_sec - start.tv_sec) * 1000000 + (now.tv_usec - start.tv_usec) < 1000000);
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    printf("SIGALRM storm: %s handler runs, %ld corrupted pipe round trips\n",
           alrm > 100 ? "over 100" : "too few", bad);
    return bad != 0 || usr1 != 1000 || !onstack_ok || alrm <= 100;
}
