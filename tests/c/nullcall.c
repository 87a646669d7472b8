// A call through a NULL function pointer must crash (SIGSEGV), also under the shim where
// address 0 holds the trampoline: the hook refuses callers that are not rewritten sites.
#include <stdio.h>

int main(void) {
    void (*volatile fn)(void) = 0;
    printf("calling NULL\n");
    fflush(stdout);
    __asm__ volatile("mov $39, %%eax\n\tcall *%0" : : "r"(fn) : "rax", "rcx", "r11", "memory");
    printf("survived\n");
    return 0;
}
