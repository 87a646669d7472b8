/* splice(2), tee(2), sendfile(2) and copy_file_range(2) on a TCP connection, checked
 * byte for byte against an echo peer, and the error each call gives compared between
 * a connection of the fast path and a kernel one (over loopback) in the same process.
 * Prints "ok NAME" per check, "FAIL NAME: why" otherwise; exits 1 if any failed.
 *   splice_calls ECHO_IP ECHO_PORT FILE SCRATCH_DIR
 * FILE: at least 128 KiB of data; the echo peer returns every byte it gets and shuts
 * its side once ours is shut. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;
static const char *scratch;

#define CHECK(name, cond, ...)                                                           \
    do {                                                                                 \
        if (cond) {                                                                      \
            printf("ok %s\n", name);                                                     \
        } else {                                                                         \
            printf("FAIL %s: ", name);                                                   \
            printf(__VA_ARGS__);                                                         \
            printf("\n");                                                                \
            failures++;                                                                  \
        }                                                                                \
        fflush(stdout);                                                                  \
    } while (0)

static void die(const char *what) {
    printf("FAIL setup %s: %s\n", what, strerror(errno));
    exit(1);
}

static int connect_to(const char *ip, int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0)
        die("connect");
    return s;
}

/* Reads exactly n bytes (blocking). */
static void read_all(int fd, char *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, buf + got, n - got);
        if (k <= 0)
            die("read_all");
        got += k;
    }
}

static void write_all(int fd, const char *buf, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t k = write(fd, buf + done, n - done);
        if (k <= 0)
            die("write_all");
        done += k;
    }
}

/* Waits until fd is readable (the echo came back). */
static void wait_readable(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 10000) != 1)
        die("wait_readable");
}

/* errno of a call that must fail, or 0 when it did not. */
#define ERRNO_OF(call) ((call) < 0 ? errno : 0)

/* The errors one socket gives; `s` is connected, has no data queued, and `feed` writes
 * into its peer. Returns the answers as a string to compare. */
static void errors_of(int s, void (*feed)(int), int feed_arg, char *out, size_t outlen) {
    char path[512];
    snprintf(path, sizeof path, "%s/errs-%d", scratch, s);
    int f = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (f < 0 || write(f, "0123456789", 10) != 10)
        die("scratch file");
    int p[2];
    if (pipe(p) < 0)
        die("pipe");
    loff_t off = 0;
    int r[32], n = 0;
    r[n++] = ERRNO_OF(copy_file_range(s, NULL, f, NULL, 10, 0));
    r[n++] = ERRNO_OF(copy_file_range(f, &off, s, NULL, 10, 0));
    r[n++] = ERRNO_OF(tee(s, p[1], 10, SPLICE_F_NONBLOCK));
    r[n++] = ERRNO_OF(tee(p[0], s, 10, SPLICE_F_NONBLOCK));
    r[n++] = ERRNO_OF(splice(s, NULL, f, NULL, 10, SPLICE_F_NONBLOCK));
    off = 0;
    r[n++] = ERRNO_OF(splice(s, &off, p[1], NULL, 10, SPLICE_F_NONBLOCK));
    off = 0;
    r[n++] = ERRNO_OF(splice(s, NULL, p[1], &off, 10, SPLICE_F_NONBLOCK));
    r[n++] = ERRNO_OF(splice(s, NULL, p[0], NULL, 10, SPLICE_F_NONBLOCK));
    r[n++] = ERRNO_OF(splice(s, NULL, p[1], NULL, 10, 0x100));
    r[n++] = ERRNO_OF(splice(s, NULL, s, NULL, 10, SPLICE_F_NONBLOCK));
    off = 0;
    r[n++] = ERRNO_OF(sendfile(f, s, &off, 10));
    /* Nothing queued, nonblocking socket: EAGAIN (sendfile into a pipe splices). */
    int fl = fcntl(s, F_GETFL);
    fcntl(s, F_SETFL, fl | O_NONBLOCK);
    r[n++] = ERRNO_OF(splice(s, NULL, p[1], NULL, 10, SPLICE_F_NONBLOCK));
    r[n++] = ERRNO_OF(sendfile(p[1], s, NULL, 10));
    /* Data queued but the pipe full, SPLICE_F_NONBLOCK: EAGAIN, and nothing lost. */
    char fill[4096];
    memset(fill, 'f', sizeof fill);
    fcntl(p[1], F_SETFL, O_NONBLOCK);
    while (write(p[1], fill, sizeof fill) > 0)
        ;
    fcntl(p[1], F_SETFL, 0);
    feed(feed_arg);
    wait_readable(s);
    r[n++] = ERRNO_OF(splice(s, NULL, p[1], NULL, 10, SPLICE_F_NONBLOCK));
    /* A pipe with no reader: EPIPE (SIGPIPE ignored). */
    close(p[0]);
    r[n++] = ERRNO_OF(splice(s, NULL, p[1], NULL, 10, SPLICE_F_NONBLOCK));
    /* Zero length: 0, whatever else. */
    r[n++] = (int)splice(s, NULL, p[1], NULL, 0, 0);
    /* Pipe -> socket: an empty pipe with SPLICE_F_NONBLOCK is EAGAIN; one whose
     * writer is gone is end of file (0). */
    int e[2];
    if (pipe(e) < 0)
        die("pipe");
    r[n++] = ERRNO_OF(splice(e[0], NULL, s, NULL, 10, SPLICE_F_NONBLOCK));
    close(e[1]);
    r[n++] = (int)splice(e[0], NULL, s, NULL, 10, 0);
    close(e[0]);
    fcntl(s, F_SETFL, fl);
    char got[8];
    read_all(s, got, 5);
    r[n++] = memcmp(got, "hello", 5) == 0 ? 0 : -1;
    close(p[1]);
    close(f);
    unlink(path);
    size_t used = 0;
    for (int i = 0; i < n; i++)
        used += snprintf(out + used, outlen - used, "%s%s", i ? " " : "",
                         r[i] > 0 ? strerrorname_np(r[i]) : (r[i] == 0 ? "0" : "bad"));
}

static int kernel_peer = -1;
static void feed_kernel(int unused) {
    (void)unused;
    write_all(kernel_peer, "hello", 5);
}
static void feed_fast(int s) {
    /* The echo peer sends it back. */
    write_all(s, "hello", 5);
}

/* Moves exactly n bytes from a pipe into `to` (which may be nonblocking). */
static int move_all(int from, int to, size_t n) {
    while (n > 0) {
        ssize_t k = splice(from, NULL, to, NULL, n, SPLICE_F_MOVE);
        if (k > 0) {
            n -= k;
        } else if (k < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = to, .events = POLLOUT};
            poll(&p, 1, 1000);
        } else {
            return 0;
        }
    }
    return 1;
}

/* A thread that, once the main thread may be blocked, reads `want` bytes of a pipe
 * and keeps the last 10. */
struct drain {
    int fd;
    size_t want, got;
    char tail[10];
};
static void *drainer(void *arg) {
    struct drain *d = arg;
    char buf[4096];
    usleep(100000);
    while (d->got < d->want) {
        ssize_t k = read(d->fd, buf, sizeof buf);
        if (k <= 0)
            break;
        for (ssize_t i = 0; i < k; i++) {
            size_t at = d->got + i;
            if (at >= d->want - 10)
                d->tail[at - (d->want - 10)] = buf[i];
        }
        d->got += k;
    }
    return NULL;
}

/* A thread that, once the main thread may be blocked, writes `n` bytes into a pipe. */
struct feeder {
    int fd;
    const char *data;
    size_t n;
};
static void *feeder(void *arg) {
    struct feeder *f = arg;
    usleep(100000);
    write_all(f->fd, f->data, f->n);
    return NULL;
}

/* Reads `n` bytes of echo from `s` and checks they equal `want`. */
static void expect_echo(const char *name, int s, const char *want, size_t n) {
    char *got = malloc(n);
    read_all(s, got, n);
    CHECK(name, memcmp(got, want, n) == 0, "echoed bytes differ");
    free(got);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: splice_calls ECHO_IP ECHO_PORT FILE SCRATCH_DIR\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    scratch = argv[4];
    int port = atoi(argv[2]);
    int file = open(argv[3], O_RDONLY);
    struct stat st;
    if (file < 0 || fstat(file, &st) < 0 || st.st_size < 131072)
        die("input file");
    size_t size = st.st_size;
    char *data = malloc(size);
    if (pread(file, data, size, 0) != (ssize_t)size)
        die("pread");

    /* ---- Errors: a fast-path connection and a kernel one give the same answers. */
    int fast = connect_to(argv[1], port);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in la = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t ll = sizeof la;
    if (bind(l, (struct sockaddr *)&la, sizeof la) < 0 || listen(l, 4) < 0 ||
        getsockname(l, (struct sockaddr *)&la, &ll) < 0)
        die("loopback listener");
    int kern = connect_to("127.0.0.1", ntohs(la.sin_port));
    kernel_peer = accept(l, NULL, NULL);
    char fast_errs[512], kern_errs[512];
    errors_of(kern, feed_kernel, 0, kern_errs, sizeof kern_errs);
    errors_of(fast, feed_fast, fast, fast_errs, sizeof fast_errs);
    printf("kernel errors: %s\nfast errors:   %s\n", kern_errs, fast_errs);
    CHECK("errors_match_kernel", strcmp(fast_errs, kern_errs) == 0, "differ");

    /* ---- sendfile file -> fast-path socket. */
    loff_t off = 1000;
    ssize_t n = sendfile(fast, file, &off, 50000);
    CHECK("sendfile_offset_count", n == 50000 && off == 51000 &&
                                       lseek(file, 0, SEEK_CUR) == 0,
          "n=%zd off=%lld pos=%lld", n, (long long)off, (long long)lseek(file, 0, SEEK_CUR));
    expect_echo("sendfile_offset_bytes", fast, data + 1000, 50000);
    n = sendfile(fast, file, NULL, 30000);
    CHECK("sendfile_null_offset", n == 30000 && lseek(file, 0, SEEK_CUR) == 30000,
          "n=%zd pos=%lld", n, (long long)lseek(file, 0, SEEK_CUR));
    expect_echo("sendfile_null_offset_bytes", fast, data, 30000);
    off = size - 100;
    n = sendfile(fast, file, &off, 1000);
    CHECK("sendfile_partial_at_eof", n == 100 && off == (loff_t)size, "n=%zd off=%lld", n,
          (long long)off);
    expect_echo("sendfile_partial_bytes", fast, data + size - 100, 100);
    n = sendfile(fast, file, &off, 1000);
    CHECK("sendfile_at_eof_is_zero", n == 0, "n=%zd", n);

    /* ---- sendfile of the whole file on a nonblocking socket: partial counts and
     * EAGAIN as the send buffer fills, the offset always where the count says. */
    int fast_fl0 = fcntl(fast, F_GETFL);
    fcntl(fast, F_SETFL, fast_fl0 | O_NONBLOCK);
    int sndbuf = 65536;
    setsockopt(fast, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    char *echo = malloc(size);
    size_t echoed = 0;
    int partials = 0, again = 0;
    off = 0;
    int sf_ok = 1;
    while (echoed < size && sf_ok) {
        if (off < (loff_t)size) {
            loff_t before = off;
            n = sendfile(fast, file, &off, size - off);
            if (n > 0 && off != before + n)
                sf_ok = 0;
            if (n > 0 && n < (ssize_t)size - before)
                partials++;
            if (n < 0 && errno == EAGAIN)
                again++;
            else if (n <= 0)
                sf_ok = 0;
        }
        ssize_t k = read(fast, echo + echoed, size - echoed);
        if (k > 0)
            echoed += k;
        else if (k == 0 || errno != EAGAIN)
            sf_ok = 0;
        else {
            struct pollfd pf = {.fd = fast, .events = POLLIN | (off < (loff_t)size ? POLLOUT : 0)};
            poll(&pf, 1, 1000);
        }
    }
    fcntl(fast, F_SETFL, fast_fl0);
    CHECK("sendfile_nonblocking", sf_ok && partials > 0 && memcmp(echo, data, size) == 0,
          "echoed %zu of %zu, %d partial, %d EAGAIN", echoed, size, partials, again);
    free(echo);

    /* ---- file -> pipe -> fast-path socket. */
    int p[2];
    if (pipe(p) < 0)
        die("pipe");
    size_t chunk = 65536, moved = 0;
    off = 0;
    int ok = 1;
    while (moved < chunk) {
        ssize_t a = splice(file, &off, p[1], NULL, chunk - moved, SPLICE_F_MOVE);
        ssize_t b = a > 0 ? splice(p[0], NULL, fast, NULL, a, SPLICE_F_MOVE | SPLICE_F_MORE) : -1;
        if (a <= 0 || b != a) {
            ok = 0;
            printf("file->pipe %zd pipe->socket %zd (%s)\n", a, b, strerror(errno));
            break;
        }
        moved += b;
    }
    CHECK("file_pipe_socket", ok && off == (loff_t)chunk, "moved %zu", moved);
    expect_echo("file_pipe_socket_bytes", fast, data, chunk);

    /* ---- fast-path socket -> pipe -> file: the echo of a 100 KiB write. */
    size_t back = 100000;
    write_all(fast, data + 7, back);
    char out_path[512];
    snprintf(out_path, sizeof out_path, "%s/socket-to-file", scratch);
    int out = open(out_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    loff_t out_off = 0;
    moved = 0;
    ok = 1;
    while (moved < back) {
        ssize_t a = splice(fast, NULL, p[1], NULL, back - moved, SPLICE_F_MOVE);
        ssize_t b = a > 0 ? splice(p[0], NULL, out, &out_off, a, SPLICE_F_MOVE) : -1;
        if (a <= 0 || b != a) {
            ok = 0;
            printf("socket->pipe %zd pipe->file %zd (%s)\n", a, b, strerror(errno));
            break;
        }
        moved += a;
    }
    char *got = malloc(back);
    CHECK("socket_pipe_file", ok && pread(out, got, back, 0) == (ssize_t)back &&
                                  memcmp(got, data + 7, back) == 0,
          "moved %zu", moved);
    free(got);
    close(out);
    unlink(out_path);

    /* ---- sendfile from the fast-path socket into a pipe (Linux splices it). */
    write_all(fast, data + 11, 20000);
    moved = 0;
    ok = 1;
    got = malloc(20000);
    while (moved < 20000) {
        ssize_t a = sendfile(p[1], fast, NULL, 20000 - moved);
        if (a <= 0) {
            ok = 0;
            printf("sendfile socket->pipe %zd (%s)\n", a, strerror(errno));
            break;
        }
        read_all(p[0], got + moved, a);
        moved += a;
    }
    CHECK("sendfile_socket_to_pipe", ok && memcmp(got, data + 11, 20000) == 0, "moved %zu",
          moved);
    free(got);

    /* ---- tee between two pipes still works under the shim. */
    int q[2];
    if (pipe(q) < 0)
        die("pipe");
    write_all(p[1], "tee-data", 8);
    n = tee(p[0], q[1], 100, 0);
    char t1[8], t2[8];
    read_all(p[0], t1, 8);
    read_all(q[0], t2, 8);
    CHECK("tee_pipes", n == 8 && !memcmp(t1, "tee-data", 8) && !memcmp(t2, "tee-data", 8),
          "n=%zd", n);

    /* ---- A unix socketpair into the fast-path socket and back, through pipes. */
    int u[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, u) < 0)
        die("socketpair");
    size_t un = 200000;
    size_t sent = 0, recvd = 0;
    char *ubuf = malloc(un);
    fcntl(u[0], F_SETFL, O_NONBLOCK);
    fcntl(u[1], F_SETFL, O_NONBLOCK);
    /* HAProxy's combination: nonblocking sockets, SPLICE_F_NONBLOCK on the reads. */
    int fast_fl = fcntl(fast, F_GETFL);
    fcntl(fast, F_SETFL, fast_fl | O_NONBLOCK);
    ok = 1;
    while (recvd < un && ok) {
        if (sent < un) {
            ssize_t w = write(u[1], data + sent, un - sent < 16384 ? un - sent : 16384);
            if (w > 0)
                sent += w;
        }
        ssize_t a = splice(u[0], NULL, p[1], NULL, 65536, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (a > 0 && !move_all(p[0], fast, a))
            ok = 0;
        ssize_t c = splice(fast, NULL, q[1], NULL, 65536,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK | SPLICE_F_MORE);
        if (c < 0 && errno != EAGAIN)
            ok = 0;
        if (c > 0 && !move_all(q[0], u[0], c))
            ok = 0;
        ssize_t r;
        while ((r = read(u[1], ubuf + recvd, un - recvd)) > 0)
            recvd += r;
        if (a <= 0 && c <= 0) {
            struct pollfd pf[2] = {{.fd = fast, .events = POLLIN}, {.fd = u[0], .events = POLLIN}};
            poll(pf, 2, 100);
        }
    }
    fcntl(fast, F_SETFL, fast_fl);
    CHECK("unix_socket_through_fast_path", ok && memcmp(ubuf, data, un) == 0,
          "sent %zu received %zu", sent, recvd);

    /* ---- A kernel TCP socket (loopback) into the fast-path socket through a pipe. */
    write_all(kernel_peer, data + 3, 60000);
    moved = 0;
    ok = 1;
    while (moved < 60000) {
        ssize_t a = splice(kern, NULL, p[1], NULL, 60000 - moved, SPLICE_F_MOVE);
        if (a <= 0 || splice(p[0], NULL, fast, NULL, a, SPLICE_F_MOVE) != a) {
            ok = 0;
            break;
        }
        moved += a;
    }
    CHECK("kernel_socket_into_fast_path", ok, "moved %zu", moved);
    expect_echo("kernel_socket_into_fast_path_bytes", fast, data + 3, 60000);

    /* ---- A full blocking pipe: splice waits for room (a reader drains it). */
    char fill[4096];
    memset(fill, 'f', sizeof fill);
    fcntl(p[1], F_SETFL, O_NONBLOCK);
    size_t filled = 0;
    ssize_t w;
    while ((w = write(p[1], fill, sizeof fill)) > 0)
        filled += w;
    fcntl(p[1], F_SETFL, 0);
    write_all(fast, "0123456789", 10);
    wait_readable(fast);
    struct drain d = {.fd = p[0], .want = filled + 10};
    pthread_t th;
    pthread_create(&th, NULL, drainer, &d);
    n = splice(fast, NULL, p[1], NULL, 10, SPLICE_F_MOVE);
    pthread_join(th, NULL);
    CHECK("blocking_pipe_full_waits", n == 10 && d.got == filled + 10 &&
                                          memcmp(d.tail, "0123456789", 10) == 0,
          "n=%zd got %zu of %zu", n, d.got, filled + 10);

    /* ---- An empty blocking pipe: splice into the socket waits for data. */
    struct feeder fd_ = {.fd = p[1], .data = data, .n = 30000};
    pthread_create(&th, NULL, feeder, &fd_);
    moved = 0;
    while (moved < 30000) {
        n = splice(p[0], NULL, fast, NULL, 30000 - moved, SPLICE_F_MOVE);
        if (n <= 0)
            break;
        moved += n;
    }
    pthread_join(th, NULL);
    CHECK("blocking_pipe_empty_waits", moved == 30000, "moved %zu (%s)", moved, strerror(errno));
    expect_echo("blocking_pipe_empty_bytes", fast, data, 30000);

    /* ---- End of stream: the peer shuts its side after ours; splice says 0. */
    shutdown(fast, SHUT_WR);
    n = splice(fast, NULL, p[1], NULL, 100, SPLICE_F_MOVE);
    CHECK("eof_is_zero", n == 0, "n=%zd (%s)", n, strerror(errno));

    /* ---- Into a socket shut for writing: EPIPE on both (SIGPIPE ignored). */
    shutdown(kern, SHUT_WR);
    write_all(p[1], "x", 1);
    int fast_epipe = ERRNO_OF(splice(p[0], NULL, fast, NULL, 1, SPLICE_F_NONBLOCK));
    int kern_epipe = ERRNO_OF(splice(p[0], NULL, kern, NULL, 1, SPLICE_F_NONBLOCK));
    CHECK("shut_socket_is_epipe", fast_epipe == EPIPE && kern_epipe == EPIPE,
          "fast %s kernel %s", strerrorname_np(fast_epipe), strerrorname_np(kern_epipe));

    printf("%s\n", failures ? "some failed" : "all ok");
    return failures ? 1 : 0;
}
