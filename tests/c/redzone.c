// A value kept in the red zone, in the 8 bytes below %rsp that the rewritten
// `call *%rax` would overwrite, must survive a system call. The rewriter finds the
// read after the site and leaves this `syscall` alone.
#include <stdio.h>
#include <unistd.h>

__attribute__((noinline)) static long keep_in_red_zone(long value) {
    long out, pid;
    __asm__ volatile(
        "mov %[v], -8(%%rsp)\n\t"
        "mov $39, %%eax\n\t" /* getpid */
        "syscall\n\t"
        "mov %%rax, %[pid]\n\t"
        "mov -8(%%rsp), %[out]\n\t"
        : [out] "=r"(out), [pid] "=r"(pid)
        : [v] "r"(value)
        : "rax", "rcx", "r11", "memory");
    return pid == getpid() ? out : -1;
}

int main(void) {
    long bad = 0;
    for (long i = 0; i < 1000; i++)
        if (keep_in_red_zone(0x1122334455667700 + i) != 0x1122334455667700 + i) bad++;
    printf("red zone: %ld of 1000 values lost\n", bad);
    return bad != 0;
}
