// Socket calls made through a `syscall` instruction that did not exist at load: the
// program JITs `syscall6(nr, a0..a5)` (the arguments moved into the kernel's registers,
// `syscall`, `ret`) and makes every socket call of a loopback connection through it.
//   rwx       the code is written into memory mapped read-write-execute: no mapping call
//             follows the write, so only Syscall User Dispatch can see the new site;
//   mprotect  written read-write, then made executable with mprotect (the rewriter's
//             mapping path sees it before mprotect returns);
//   redzone   as rwx, but the code after the `syscall` reads the 8 bytes below %rsp, so
//             the site may never be rewritten: the backstop serves every call of it.
// Prints "ok jit <mode> <bytes>" and the first two bytes of the site after the calls:
// "site 0f05" (never rewritten: the calls went straight to the kernel) or "site ffd0".
// A second argument runs the calls elsewhere than where the code was written: `thread`
// (a new pthread) or `fork` (a child process; the parent passes on its exit status), so
// the site's first call happens in a task the kernel started without SUD.
// Usage: jit_syscall rwx|mprotect [thread|fork]
#include <arpa/inet.h>
#include <pthread.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef long (*syscall6_fn)(long, long, long, long, long, long, long);

static const unsigned char CODE[] = {
    0x48, 0x89, 0xf8,             // mov rax, rdi
    0x48, 0x89, 0xf7,             // mov rdi, rsi
    0x48, 0x89, 0xd6,             // mov rsi, rdx
    0x48, 0x89, 0xca,             // mov rdx, rcx
    0x4d, 0x89, 0xc2,             // mov r10, r8
    0x4d, 0x89, 0xc8,             // mov r8, r9
    0x4c, 0x8b, 0x4c, 0x24, 0x08, // mov r9, [rsp+8]
    0x0f, 0x05,                   // syscall
    0xc3,                         // ret
};
#define SITE_AT 23

// The same with `mov rcx, [rsp-8]` after the `syscall`.
static const unsigned char CODE_REDZONE[] = {
    0x48, 0x89, 0xf8, 0x48, 0x89, 0xf7, 0x48, 0x89, 0xd6, 0x48, 0x89, 0xca, 0x4d, 0x89,
    0xc2, 0x4d, 0x89, 0xc8, 0x4c, 0x8b, 0x4c, 0x24, 0x08, 0x0f, 0x05, 0x48, 0x8b, 0x4c,
    0x24, 0xf8, 0xc3,
};

static syscall6_fn jit(const char *mode, unsigned char **site) {
    unsigned char *p;
    if (strcmp(mode, "rwx") == 0 || strcmp(mode, "redzone") == 0) {
        p = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS,
                 -1, 0);
        if (p == MAP_FAILED) return NULL;
        if (strcmp(mode, "rwx") == 0)
            memcpy(p, CODE, sizeof CODE);
        else
            memcpy(p, CODE_REDZONE, sizeof CODE_REDZONE);
    } else {
        p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return NULL;
        memcpy(p, CODE, sizeof CODE);
        if (mprotect(p, 4096, PROT_READ | PROT_EXEC) != 0) return NULL;
    }
    *site = p + SITE_AT;
    return (syscall6_fn)p;
}

#define FAIL(what)                                                                     \
    do {                                                                               \
        fprintf(stderr, "jit_syscall: %s failed: %ld\n", what, r);                     \
        return 1;                                                                      \
    } while (0)

static const char *mode;
static unsigned char *site;
static syscall6_fn sys;

// A loopback connection to itself, every call through the JIT-ed `syscall`.
static int connect_through_jit(void) {
    long r;
    long l = sys(SYS_socket, AF_INET, SOCK_STREAM, 0, 0, 0, 0);
    if ((r = l) < 0) FAIL("socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if ((r = sys(SYS_bind, l, (long)&a, sizeof a, 0, 0, 0)) != 0) FAIL("bind");
    if ((r = sys(SYS_listen, l, 8, 0, 0, 0, 0)) != 0) FAIL("listen");
    socklen_t len = sizeof a;
    if ((r = sys(SYS_getsockname, l, (long)&a, (long)&len, 0, 0, 0)) != 0) FAIL("getsockname");
    long c = sys(SYS_socket, AF_INET, SOCK_STREAM, 0, 0, 0, 0);
    if ((r = c) < 0) FAIL("socket");
    if ((r = sys(SYS_connect, c, (long)&a, sizeof a, 0, 0, 0)) != 0) FAIL("connect");
    long s = sys(SYS_accept4, l, 0, 0, 0, 0, 0);
    if ((r = s) < 0) FAIL("accept");
    const char msg[] = "through a fresh syscall";
    if ((r = sys(SYS_write, c, (long)msg, sizeof msg, 0, 0, 0)) != (long)sizeof msg) FAIL("write");
    char buf[64] = {0};
    long got = 0;
    while (got < (long)sizeof msg) {
        r = sys(SYS_read, s, (long)buf + got, sizeof buf - got, 0, 0, 0);
        if (r <= 0) FAIL("read");
        got += r;
    }
    if (memcmp(buf, msg, sizeof msg) != 0) {
        fprintf(stderr, "jit_syscall: data differs\n");
        return 1;
    }
    sys(SYS_close, s, 0, 0, 0, 0, 0);
    sys(SYS_close, c, 0, 0, 0, 0, 0);
    sys(SYS_close, l, 0, 0, 0, 0, 0);
    printf("ok jit %s %ld\nsite %02x%02x\n", mode, got, site[0], site[1]);
    fflush(stdout);
    return 0;
}

static void *in_thread(void *status) {
    *(int *)status = connect_through_jit();
    return NULL;
}

int main(int argc, char **argv) {
    mode = argc > 1 ? argv[1] : "rwx";
    const char *where = argc > 2 ? argv[2] : "here";
    sys = jit(mode, &site);
    if (!sys) {
        perror("jit");
        return 1;
    }
    if (strcmp(where, "thread") == 0) {
        pthread_t t;
        int status = 1;
        if (pthread_create(&t, NULL, in_thread, &status) != 0) return 1;
        pthread_join(t, NULL);
        return status;
    }
    if (strcmp(where, "fork") == 0) {
        pid_t child = fork();
        if (child < 0) return 1;
        if (child == 0) return connect_through_jit();
        int st;
        if (waitpid(child, &st, 0) != child) return 1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
    }
    return connect_through_jit();
}
