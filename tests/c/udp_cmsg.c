/* UDP ancillary data as a program sees it, printed so that two runs (the kernel's
 * and fastnet's) can be compared byte for byte.
 *
 *   udp_cmsg server PORT N    receives N datagrams with the receive options on and
 *                             prints, for each, recvmsg's result, flags, name and
 *                             the whole control buffer (timestamps are checked
 *                             against the clock and masked); answers each with a
 *                             sendmsg whose IP_PKTINFO names the source address.
 *   udp_cmsg client IP PORT N sends N datagrams with varying TOS/TTL, prints each
 *                             answer and the address it came from.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    printf("FAIL %s: %s\n", what, strerror(errno));
    exit(1);
}

static void print_opts(int fd, const char *when) {
    static const struct { int level, name; const char *label; } opts[] = {
        {SOL_IP, IP_PKTINFO, "IP_PKTINFO"},
        {SOL_IP, IP_RECVTOS, "IP_RECVTOS"},
        {SOL_IP, IP_RECVTTL, "IP_RECVTTL"},
        {SOL_IP, IP_RECVORIGDSTADDR, "IP_RECVORIGDSTADDR"},
        {SOL_IP, IP_RECVERR, "IP_RECVERR"},
        {SOL_SOCKET, SO_TIMESTAMP, "SO_TIMESTAMP"},
        {SOL_SOCKET, SO_TIMESTAMPNS, "SO_TIMESTAMPNS"},
    };
    printf("%s:", when);
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        int v = -1;
        socklen_t len = sizeof v;
        int r = getsockopt(fd, opts[i].level, opts[i].name, &v, &len);
        printf(" %s=%d/%d/%u", opts[i].label, r, v, len);
    }
    printf("\n");
}

static void set_int(int fd, int level, int name, int v) {
    if (setsockopt(fd, level, name, &v, sizeof v) != 0) {
        printf("setsockopt %d/%d: %s\n", level, name, strerror(errno));
    }
}

/* Replaces the value of timestamp cmsgs with 'T' bytes after checking it is within
 * 5 s of now (the value itself differs between runs). */
static void mask_timestamps(unsigned char *ctl, size_t used) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    size_t off = 0;
    while (off + sizeof(struct cmsghdr) <= used) {
        struct cmsghdr h;
        memcpy(&h, ctl + off, sizeof h);
        if (h.cmsg_len < sizeof h || off + h.cmsg_len > used)
            break;
        size_t dlen = h.cmsg_len - sizeof h;
        unsigned char *d = ctl + off + sizeof h;
        if (h.cmsg_level == SOL_SOCKET &&
            (h.cmsg_type == SO_TIMESTAMP || h.cmsg_type == SO_TIMESTAMPNS) && dlen == 16) {
            long long sec, frac;
            memcpy(&sec, d, 8);
            memcpy(&frac, d + 8, 8);
            long long lim = h.cmsg_type == SO_TIMESTAMP ? 1000000 : 1000000000;
            long long age = (long long)now.tv_sec - sec;
            printf("  timestamp type=%d %s\n", h.cmsg_type,
                   (age >= 0 && age <= 5 && frac >= 0 && frac < lim) ? "plausible" : "WRONG");
            memset(d, 'T', dlen);
        }
        off += CMSG_ALIGN(h.cmsg_len);
    }
}

static void hex(const char *label, const unsigned char *p, size_t n) {
    printf("  %s[%zu]:", label, n);
    for (size_t i = 0; i < n; i++)
        printf("%s%02x", i % 8 ? "" : " ", p[i]);
    printf("\n");
}

static int server(int port, int n) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0)
        die("socket");
    print_opts(fd, "fresh");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0)
        die("bind");
    set_int(fd, SOL_IP, IP_PKTINFO, 1);
    set_int(fd, SOL_IP, IP_RECVTOS, 1);
    set_int(fd, SOL_IP, IP_RECVTTL, 1);
    set_int(fd, SOL_IP, IP_RECVORIGDSTADDR, 1);
    set_int(fd, SOL_IP, IP_RECVERR, 1);
    set_int(fd, SOL_SOCKET, SO_TIMESTAMPNS, 1);
    print_opts(fd, "set");
    printf("ready\n");
    fflush(stdout);
    /* Control buffer sizes: room for all, cut in the middle of a cmsg, only a header,
     * none at all (NULL). */
    static const size_t sizes[] = {256, 56, 16, 0};
    for (int i = 0; i < n; i++) {
        if (i == n / 2) {
            /* Half way: microsecond timestamps, no TOS. */
            set_int(fd, SOL_SOCKET, SO_TIMESTAMP, 1);
            set_int(fd, SOL_IP, IP_RECVTOS, 0);
            print_opts(fd, "switched");
        }
        size_t cap = sizes[i % 4];
        unsigned char ctl[256], buf[64], name[32];
        memset(ctl, 0xaa, sizeof ctl);
        memset(name, 0xbb, sizeof name);
        memset(buf, 0, sizeof buf);
        struct iovec iov = {.iov_base = buf, .iov_len = i % 3 == 2 ? 4 : sizeof buf};
        struct msghdr m = {
            .msg_name = name,
            .msg_namelen = sizeof name,
            .msg_iov = &iov,
            .msg_iovlen = 1,
            .msg_control = cap ? ctl : NULL,
            .msg_controllen = cap,
        };
        ssize_t r = recvmsg(fd, &m, 0);
        if (r < 0)
            die("recvmsg");
        printf("datagram %d: r=%zd flags=%#x namelen=%u controllen=%zu data=%.*s\n", i, r,
               m.msg_flags, m.msg_namelen, (size_t)m.msg_controllen, (int)r, buf);
        /* The client's port differs between runs: print its address only. */
        hex("name-family+addr", name, 2);
        hex("name-ip", name + 4, 12);
        mask_timestamps(ctl, m.msg_controllen);
        hex("control", ctl, cap);
        /* Answer from the address the datagram went to (IP_PKTINFO's spec_dst). */
        struct sockaddr_in peer;
        memcpy(&peer, name, sizeof peer);
        struct in_pktinfo pi = {0};
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
            if (c->cmsg_level == SOL_IP && c->cmsg_type == IP_PKTINFO &&
                c->cmsg_len >= CMSG_LEN(sizeof pi))
                memcpy(&pi, CMSG_DATA(c), sizeof pi);
        union {
            char buf[CMSG_SPACE(sizeof(struct in_pktinfo))];
            struct cmsghdr align;
        } out;
        memset(&out, 0, sizeof out);
        struct cmsghdr *c = (struct cmsghdr *)out.buf;
        c->cmsg_level = SOL_IP;
        c->cmsg_type = IP_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
        struct in_pktinfo spi = {.ipi_spec_dst = pi.ipi_spec_dst};
        memcpy(CMSG_DATA(c), &spi, sizeof spi);
        char reply[32];
        int rl = snprintf(reply, sizeof reply, "ack %d", i);
        struct iovec riov = {.iov_base = reply, .iov_len = rl};
        struct msghdr rm = {
            .msg_name = &peer,
            .msg_namelen = sizeof peer,
            .msg_iov = &riov,
            .msg_iovlen = 1,
            .msg_control = out.buf,
            .msg_controllen = sizeof out.buf,
        };
        if (i == 0) {
            /* A source address that is not ours: Linux refuses it. */
            struct in_pktinfo bad = {0};
            inet_pton(AF_INET, "10.77.250.250", &bad.ipi_spec_dst);
            memcpy(CMSG_DATA(c), &bad, sizeof bad);
            ssize_t br = sendmsg(fd, &rm, 0);
            printf("  foreign source: r=%zd errno=%s\n", br, br < 0 ? strerror(errno) : "-");
            memcpy(CMSG_DATA(c), &spi, sizeof spi);
        }
        ssize_t sr = sendmsg(fd, &rm, 0);
        printf("  reply: r=%zd %s\n", sr, sr < 0 ? strerror(errno) : "");
        fflush(stdout);
    }
    return 0;
}

static int client(const char *ip, int port, int n) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0)
        die("socket");
    set_int(fd, SOL_IP, IP_PKTINFO, 1);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &dst.sin_addr);
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    static const int tos[] = {0, 0xb8, 0x28, 0x10};
    static const int ttl[] = {64, 7, 200, 1};
    for (int i = 0; i < n; i++) {
        set_int(fd, SOL_IP, IP_TOS, tos[i % 4]);
        set_int(fd, SOL_IP, IP_TTL, ttl[i % 4]);
        char msg[32];
        int ml = snprintf(msg, sizeof msg, "datagram-%d", i);
        char reply[64];
        ssize_t r = -1;
        /* The server may start late: resend until it answers. */
        for (int tries = 0; tries < 10 && r < 0; tries++) {
            if (sendto(fd, msg, ml, 0, (struct sockaddr *)&dst, sizeof dst) != ml)
                die("sendto");
            struct sockaddr_in from;
            unsigned char ctl[128];
            struct iovec iov = {.iov_base = reply, .iov_len = sizeof reply};
            struct msghdr m = {.msg_name = &from, .msg_namelen = sizeof from,
                               .msg_iov = &iov, .msg_iovlen = 1,
                               .msg_control = ctl, .msg_controllen = sizeof ctl};
            r = recvmsg(fd, &m, 0);
            if (r >= 0) {
                char f[32];
                inet_ntop(AF_INET, &from.sin_addr, f, sizeof f);
                printf("answer %.*s from %s:%d\n", (int)r, reply, f, ntohs(from.sin_port));
            }
        }
        if (r < 0)
            die("no answer");
    }
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 4 && strcmp(argv[1], "server") == 0)
        return server(atoi(argv[2]), atoi(argv[3]));
    if (argc == 5 && strcmp(argv[1], "client") == 0)
        return client(argv[2], atoi(argv[3]), atoi(argv[4]));
    fprintf(stderr, "usage: udp_cmsg server PORT N | client IP PORT N\n");
    return 2;
}
