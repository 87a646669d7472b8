/* TCP_INFO after a fixed exchange, printed as key=value lines, so a test can run the
 * same exchange on the kernel and under fastnet and compare what the fields mean.
 *
 *   tcp_info server PORT          accept one connection, echo PINGS pings, read BULK
 *                                 bytes, report, wait for EOF
 *   tcp_info client IP PORT       connect, PINGS round trips of 64 bytes (timed),
 *                                 send BULK bytes, wait for the server's "done", report
 *
 * Each side reports before either closes, so both are ESTABLISHED. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <linux/tcp.h> /* the kernel's struct tcp_info (glibc's is older) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PINGS 200
#define BULK (4 << 20)

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void full(int fd, char *buf, size_t n, int writing) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = writing ? write(fd, buf + done, n - done) : read(fd, buf + done, n - done);
        if (r <= 0)
            die(writing ? "write" : "read");
        done += (size_t)r;
    }
}

static uint64_t now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000 + (uint64_t)t.tv_nsec / 1000;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void report(int fd) {
    /* The whole struct as this libc knows it, then a short read (Linux copies
     * min(optlen, its struct's size) and says how much). */
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
        die("getsockopt TCP_INFO");
    unsigned char big[1024];
    socklen_t big_len = sizeof big;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, big, &big_len) < 0)
        die("getsockopt TCP_INFO (large buffer)");
    unsigned char small[8];
    socklen_t small_len = sizeof small;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, small, &small_len) < 0)
        die("getsockopt TCP_INFO (8 bytes)");
    printf("len=%u\nlen_large=%u\nlen_small=%u\nsmall_state=%u\n", len, big_len, small_len,
           small[0]);
    printf("state=%u\nca_state=%u\noptions=%u\nsnd_wscale=%u\nrcv_wscale=%u\n", ti.tcpi_state,
           ti.tcpi_ca_state, ti.tcpi_options, ti.tcpi_snd_wscale, ti.tcpi_rcv_wscale);
    printf("rto=%u\nsnd_mss=%u\nrcv_mss=%u\nadvmss=%u\npmtu=%u\n", ti.tcpi_rto, ti.tcpi_snd_mss,
           ti.tcpi_rcv_mss, ti.tcpi_advmss, ti.tcpi_pmtu);
    printf("unacked=%u\nrtt=%u\nrttvar=%u\nmin_rtt=%u\nsnd_cwnd=%u\nsnd_ssthresh=%u\n",
           ti.tcpi_unacked, ti.tcpi_rtt, ti.tcpi_rttvar, ti.tcpi_min_rtt, ti.tcpi_snd_cwnd,
           ti.tcpi_snd_ssthresh);
    printf("total_retrans=%u\nbytes_acked=%llu\nbytes_received=%llu\n", ti.tcpi_total_retrans,
           (unsigned long long)ti.tcpi_bytes_acked, (unsigned long long)ti.tcpi_bytes_received);
    printf("segs_out=%u\nsegs_in=%u\ndata_segs_out=%u\ndata_segs_in=%u\n", ti.tcpi_segs_out,
           ti.tcpi_segs_in, ti.tcpi_data_segs_out, ti.tcpi_data_segs_in);
    printf("bytes_sent=%llu\ndelivery_rate=%llu\nnotsent_bytes=%u\n",
           (unsigned long long)ti.tcpi_bytes_sent, (unsigned long long)ti.tcpi_delivery_rate,
           ti.tcpi_notsent_bytes);
    fflush(stdout);
}

int main(int argc, char **argv) {
    static char bulk[BULK];
    char ping[64];
    if (argc == 3 && strcmp(argv[1], "server") == 0) {
        int l = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
        if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 4) < 0)
            die("bind/listen");
        printf("listening\n");
        fflush(stdout);
        int c = accept(l, NULL, NULL);
        if (c < 0)
            die("accept");
        for (int i = 0; i < PINGS; i++) {
            full(c, ping, sizeof ping, 0);
            full(c, ping, sizeof ping, 1);
        }
        full(c, bulk, BULK, 0);
        report(c);
        full(c, "done", 4, 1);
        char x;
        while (read(c, &x, 1) > 0) {
        }
        close(c);
        close(l);
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "client") == 0) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
        inet_pton(AF_INET, argv[2], &a.sin_addr);
        if (connect(c, (struct sockaddr *)&a, sizeof a) < 0)
            die("connect");
        static uint64_t rtts[PINGS];
        memset(ping, 'p', sizeof ping);
        for (int i = 0; i < PINGS; i++) {
            uint64_t t0 = now_us();
            full(c, ping, sizeof ping, 1);
            full(c, ping, sizeof ping, 0);
            rtts[i] = now_us() - t0;
        }
        qsort(rtts, PINGS, sizeof rtts[0], cmp_u64);
        memset(bulk, 'b', sizeof bulk);
        full(c, bulk, BULK, 1);
        char done[4];
        full(c, done, 4, 0);
        printf("app_rtt_median=%llu\n", (unsigned long long)rtts[PINGS / 2]);
        report(c);
        close(c);
        return 0;
    }
    fprintf(stderr, "usage: tcp_info server PORT | tcp_info client IP PORT\n");
    return 2;
}
