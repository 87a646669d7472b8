// The hook's pass-through cost, measured in one process: getppid through a `syscall`
// the rewriter sees (rewritten to `call *%rax` under the shim) against one it cannot
// see (hidden inside another instruction's immediate, so it stays a real `syscall`).
// Rounds alternate between the two; the best round of each counts, which filters out
// noise from other work on the machine. Prints "<native ns> <hooked ns>".
// With a third argument `sud`, the loops compare the rewritten site against one the
// rewriter leaves alone (its code reads the red zone after the `syscall`), which under
// the Syscall User Dispatch backstop traps at every call: prints "<SUD ns> <rewritten ns>".
// Usage: getppid_loop [calls per round] [rounds] [sud]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// `mov eax, 110; jmp 1f+1; 1: mov eax, 0x90c3050f`: a linear sweep decodes a `mov`,
// the CPU jumps into its immediate and runs `0f 05` (syscall), `c3` (ret).
long hidden_getppid(void);
__asm__(".text\n"
        "hidden_getppid:\n"
        "mov $110, %eax\n"
        "jmp 1f + 1\n"
        "1: .byte 0xb8, 0x0f, 0x05, 0xc3, 0x90\n");

#include "redzone_site.h"

// A plain `syscall`: under the shim, rewritten to `call *%rax`.
__attribute__((noinline)) static long visible_getppid(void) {
    long rax = 110;
    __asm__ volatile("syscall" : "+a"(rax) : : "rcx", "r11", "memory");
    return rax;
}

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); // vDSO: not a system call, not hooked
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 200000;
    int rounds = argc > 2 ? atoi(argv[2]) : 30;
    long (*first)(void) = argc > 3 && strcmp(argv[3], "sud") == 0 ? redzone_getppid
                                                                    : hidden_getppid;
    double best_native = 1e18, best_hooked = 1e18;
    long sink = 0;
    for (int r = 0; r < rounds; r++) {
        double t0 = now_ns();
        for (long i = 0; i < n; i++) sink += first();
        double t1 = now_ns();
        for (long i = 0; i < n; i++) sink += visible_getppid();
        double t2 = now_ns();
        if ((t1 - t0) / n < best_native) best_native = (t1 - t0) / n;
        if ((t2 - t1) / n < best_hooked) best_hooked = (t2 - t1) / n;
    }
    printf("%.1f %.1f\n", best_native, best_hooked);
    return sink == 0;
}
