// vfork (the parent sleeps while the child runs on its stack and writes its memory),
// vfork + exec, posix_spawn (glibc: clone(CLONE_VM|CLONE_VFORK) on a new stack),
// fork + exec. Usage: spawn [posix_spawn count]
#define _GNU_SOURCE
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int wait_code(pid_t p) {
    int st;
    if (waitpid(p, &st, 0) != p) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 100;
    volatile int shared = 0;
    pid_t p = vfork();
    if (p == 0) {
        shared = 42; // vfork shares memory: the parent sees this
        _exit(5);
    }
    printf("vfork: child exit %d, shared %d\n", wait_code(p), shared);

    fflush(stdout);
    p = vfork();
    if (p == 0) {
        char *args[] = {"/bin/echo", "vfork+exec says hello", NULL};
        execve(args[0], args, environ);
        _exit(127);
    }
    printf("vfork+exec: exit %d\n", wait_code(p));

    int ok = 0;
    for (int i = 0; i < n; i++) {
        char code[8];
        snprintf(code, sizeof code, "%d", i % 7);
        char *args[] = {"/bin/sh", "-c", "exit $0", code, NULL};
        pid_t c;
        if (posix_spawn(&c, "/bin/sh", NULL, NULL, args, environ) != 0) return 20;
        ok += wait_code(c) == i % 7;
    }
    printf("posix_spawn: %d of %d children exited as asked\n", ok, n);

    fflush(stdout);
    p = fork();
    if (p == 0) {
        char *args[] = {"/bin/echo", "fork+exec says hello", NULL};
        execve(args[0], args, environ);
        _exit(127);
    }
    printf("fork+exec: exit %d\n", wait_code(p));
    return ok == n ? 0 : 1;
}
