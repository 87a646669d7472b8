// A library whose code makes raw system calls (no libc), loaded with dlopen.
long raw_getppid_many(int n) {
    long r = 0;
    for (int i = 0; i < n; i++)
        __asm__ volatile("syscall" : "=a"(r) : "a"(110L) : "rcx", "r11", "memory");
    return r;
}
