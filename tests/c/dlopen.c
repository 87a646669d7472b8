// dlopen a library with raw `syscall` instructions: they are rewritten before dlopen
// returns (trace -c counts them). Usage: dlopen <path of librawlib.so> [calls]
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int n = argc > 2 ? atoi(argv[2]) : 777;
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) { printf("dlopen: %s\n", dlerror()); return 1; }
    long (*f)(int) = (long (*)(int))dlsym(h, "raw_getppid_many");
    long r = f(n);
    printf("raw getppid from dlopened code: %s\n", r == getppid() ? "matches" : "differs");
    return r != getppid();
}
