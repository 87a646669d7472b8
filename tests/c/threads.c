// Threads made by pthread_create (glibc: clone3 with a new stack), by a raw clone3 and a
// raw clone with new 1 KiB stacks, each making system calls; then exit_group from a thread.
// Usage: threads [--no-raw]  (the raw threads share the main thread's TLS, so the hook's
// per-thread state too: under `trace -c` some of their calls pass uncounted)
#define _GNU_SOURCE
#include <linux/sched.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <errno.h>
#include <sys/wait.h>
#include <unistd.h>

static atomic_long total;

static void *worker(void *arg) {
    long n = (long)arg, sum = 0;
    for (int i = 0; i < 200; i++) sum += (syscall(SYS_getppid) > 0) + (getpid() > 0);
    atomic_fetch_add(&total, sum + n);
    return NULL;
}

static atomic_int raw_done;

// Runs in a thread that shares the parent's TLS (no CLONE_SETTLS): raw syscalls only.
static void raw_child(void *arg) {
    long v = (long)arg;
    for (int i = 0; i < 100; i++) {
        long r;
        __asm__ volatile("syscall" : "=a"(r) : "a"(SYS_getppid) : "rcx", "r11", "memory");
        v += r > 0;
    }
    atomic_fetch_add(&total, v);
    atomic_fetch_add(&raw_done, 1);
}

static long raw_clone3(struct clone_args *ca, void (*fn)(void *), void *arg) {
    register long rax __asm__("rax") = SYS_clone3;
    register void (*r12)(void *) __asm__("r12") = fn;
    register void *r13 __asm__("r13") = arg;
    __asm__ volatile(
        "syscall\n\t"
        "test %%rax, %%rax\n\t"
        "jnz 1f\n\t"
        "mov %%r13, %%rdi\n\t"
        "call *%%r12\n\t"
        "mov $60, %%eax\n\t"
        "xor %%edi, %%edi\n\t"
        "syscall\n\t"
        "ud2\n\t"
        "1:\n\t"
        : "+a"(rax)
        : "D"(ca), "S"(sizeof *ca), "r"(r12), "r"(r13)
        : "rcx", "r11", "memory");
    return rax;
}

static long raw_clone(unsigned long flags, void *top, void (*fn)(void *), void *arg) {
    register long rax __asm__("rax") = SYS_clone;
    register void (*r12)(void *) __asm__("r12") = fn;
    register void *r13 __asm__("r13") = arg;
    register long r10 __asm__("r10") = 0;
    register long r8 __asm__("r8") = 0;
    __asm__ volatile(
        "syscall\n\t"
        "test %%rax, %%rax\n\t"
        "jnz 1f\n\t"
        "mov %%r13, %%rdi\n\t"
        "call *%%r12\n\t"
        "mov $60, %%eax\n\t"
        "xor %%edi, %%edi\n\t"
        "syscall\n\t"
        "ud2\n\t"
        "1:\n\t"
        : "+a"(rax)
        : "D"(flags), "S"(top), "d"(0), "r"(r10), "r"(r8), "r"(r12), "r"(r13)
        : "rcx", "r11", "memory");
    return rax;
}

static void *exiter(void *arg) {
    (void)arg;
    syscall(SYS_exit_group, 3);
    return NULL;
}

int main(int argc, char **argv) {
    int raw = !(argc > 1 && strcmp(argv[1], "--no-raw") == 0);
    // Probing clone3 with bad arguments gets the kernel's answer, not a crash. (Not
    // clone3(NULL, 64): under the hook, address 0 is mapped and readable, so the kernel
    // reads the trampoline page and says EINVAL where it would say EFAULT.)
    long e1 = syscall(SYS_clone3, NULL, 8) == -1 ? errno : 0;
    long e2 = syscall(SYS_clone3, (void *)8, 8) == -1 ? errno : 0;
    printf("clone3 probes: %s, %s\n", strerror(e1), strerror(e2));

    pthread_t t[16];
    for (long i = 0; i < 16; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < 16; i++) pthread_join(t[i], NULL);
    printf("pthreads: total %ld\n", atomic_load(&total));

    if (!raw) goto exit_group_test;
    const unsigned long flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND |
                                CLONE_THREAD | CLONE_SYSVSEM;
    // Small stacks, like a Go goroutine's 2 KiB: 1 KiB each above a PROT_NONE guard
    // page, so a hook that used more of the caller's stack than its `call` would fault.
    size_t sz = 1024;
    char *g1 = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *g2 = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mprotect(g1, 4096, PROT_NONE);
    mprotect(g2, 4096, PROT_NONE);
    char *s1 = g1 + 4096, *s2 = g2 + 4096;
    struct clone_args ca;
    memset(&ca, 0, sizeof ca);
    ca.flags = flags;
    ca.stack = (uint64_t)(uintptr_t)s1;
    ca.stack_size = sz;
    long before = atomic_load(&total);
    if (raw_clone3(&ca, raw_child, (void *)1000) <= 0) return 10;
    if (ca.stack_size != sz) { printf("clone3: struct changed\n"); return 11; }
    if (raw_clone(flags, s2 + sz, raw_child, (void *)2000) <= 0) return 12;
    while (atomic_load(&raw_done) < 2) sched_yield();
    printf("raw clone3 + clone: added %ld\n", atomic_load(&total) - before);
exit_group_test:;

    // exit_group from a thread other than main ends the whole process with its code.
    pid_t child = fork();
    if (child == 0) {
        pthread_t e;
        pthread_create(&e, NULL, exiter, NULL);
        for (;;) pause();
    }
    int st;
    waitpid(child, &st, 0);
    printf("exit_group from a thread: exit code %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return 0;
}
