// An app that uses SIGSYS itself, as seccomp users do. Prints the same lines with and
// without fastnet (whose Syscall User Dispatch backstop also uses SIGSYS):
//  1. its sigaction(SIGSYS) reads back its own handler, also after a posix_spawn (whose
//     child, sharing the parent's memory until its exec, resets every handler);
//  2. a seccomp filter with SECCOMP_RET_TRAP on getppid: its handler gets the siginfo
//     (si_code SYS_SECCOMP, si_syscall, si_errno = the filter's data) and answers the
//     call through the context (getppid returns 4242);
//  3. raise(SIGSYS): its handler sees SI_TKILL;
//  4. with SIGSYS blocked, a JIT-ed `syscall` (getpid, from memory mapped RWX) still
//     works (under fastnet it traps to the backstop, which must not kill the thread);
//  5. a `syscall` whose code reads the red zone after it (left unrewritten) works.
#define _GNU_SOURCE
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static volatile int seen_code, seen_nr, seen_errno, calls;

static void on_sigsys(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    calls++;
    seen_code = si->si_code;
    seen_nr = si->si_syscall;
    seen_errno = si->si_errno;
    if (si->si_code == 1 /* SYS_SECCOMP */) {
        ucontext_t *uc = ctx;
        uc->uc_mcontext.gregs[REG_RAX] = 4242;
    }
}

#include "redzone_site.h"

int main(void) {
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigsys;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSYS, &sa, NULL) != 0) return perror("sigaction"), 1;
    if (sigaction(SIGSYS, NULL, &old) != 0) return perror("sigaction"), 1;
    printf("own handler read back: %s, siginfo %s\n",
           old.sa_sigaction == on_sigsys ? "yes" : "no",
           old.sa_flags & SA_SIGINFO ? "yes" : "no");

    pid_t child;
    char *argv[] = {"true", NULL};
    extern char **environ;
    if (posix_spawnp(&child, "true", NULL, NULL, argv, environ) != 0) return perror("spawn"), 1;
    int st;
    waitpid(child, &st, 0);
    if (sigaction(SIGSYS, NULL, &old) != 0) return perror("sigaction"), 1;
    printf("after posix_spawn: own handler %s, child exit %d\n",
           old.sa_sigaction == on_sigsys ? "yes" : "no", WEXITSTATUS(st));

    long real_ppid = getppid();
    struct sock_filter prog[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_getppid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP | 77),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog fprog = {.len = sizeof prog / sizeof prog[0], .filter = prog};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return perror("no_new_privs"), 1;
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) != 0) return perror("seccomp"), 1;
    long r = syscall(SYS_getppid);
    printf("seccomp trap: getppid = %ld, handler calls %d, si_code %d, si_syscall %d, "
           "si_errno %d\n",
           r, calls, seen_code, seen_nr, seen_errno);

    raise(SIGSYS);
    printf("raise: handler calls %d, si_code %d\n", calls, seen_code);

    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGSYS);
    sigprocmask(SIG_BLOCK, &block, NULL);
    unsigned char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return perror("mmap"), 1;
    // mov eax, 39 (getpid); syscall; ret
    const unsigned char code[] = {0xb8, 39, 0, 0, 0, 0x0f, 0x05, 0xc3};
    memcpy(p, code, sizeof code);
    long pid = ((long (*)(void))p)();
    printf("jit getpid with SIGSYS blocked: %s\n", pid == getpid() ? "right" : "WRONG");
    sigprocmask(SIG_UNBLOCK, &block, NULL);

    // The seccomp filter answers getppid with a trap: the red-zone site's call goes
    // through it as well.
    calls = 0;
    long rz = redzone_getppid();
    printf("red-zone site: getppid = %ld, handler calls %d (real parent %s)\n", rz, calls,
           real_ppid > 0 ? "known" : "unknown");
    return 0;
}
