/* Signals keep their siginfo under the shim. A CPU-time timer (as HAProxy's watchdog
 * arms one per thread) sends SIGALRM with si_code SI_TIMER and a value; the thread
 * spends its CPU time in socket calls, so most of those signals land while it is
 * inside the stack and are delivered afterwards. The handler must see SI_TIMER and
 * the value every time: HAProxy takes any other si_code for "another thread wants
 * me dead" and aborts.
 *
 *   sigcode IP PORT SECONDS   UDP ping-pong with an echo server for SECONDS; prints
 *                             "signals=N bad=M exchanged=K".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t signals, bad;

static void on_alarm(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    (void)ctx;
    signals++;
    if (si->si_code != SI_TIMER || si->si_value.sival_int != 4242)
        bad++;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: sigcode IP PORT SECONDS\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_alarm;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);

    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev._sigev_un._tid = syscall(SYS_gettid);
    sev.sigev_signo = SIGALRM;
    sev.sigev_value.sival_int = 4242;
    timer_t timer;
    if (timer_create(CLOCK_THREAD_CPUTIME_ID, &sev, &timer) != 0) {
        perror("timer_create");
        return 1;
    }
    struct itimerspec its = {.it_value = {0, 1000000}, .it_interval = {0, 1000000}};
    timer_settime(timer, 0, &its, NULL);

    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &peer.sin_addr);
    if (connect(fd, (struct sockaddr *)&peer, sizeof peer) != 0) {
        perror("connect");
        return 1;
    }
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    time_t end = time(NULL) + atoi(argv[3]);
    long exchanged = 0;
    char buf[1024], got[1024];
    memset(buf, 'q', sizeof buf);
    while (time(NULL) < end) {
        if (send(fd, buf, sizeof buf, 0) != sizeof buf) {
            perror("send");
            return 1;
        }
        ssize_t r = recv(fd, got, sizeof got, 0);
        if (r != sizeof buf) {
            perror("recv");
            return 1;
        }
        exchanged++;
    }
    its.it_value.tv_nsec = 0;
    its.it_interval.tv_nsec = 0;
    timer_settime(timer, 0, &its, NULL);
    printf("signals=%d bad=%d exchanged=%ld\n", (int)signals, (int)bad, exchanged);
    return 0;
}
