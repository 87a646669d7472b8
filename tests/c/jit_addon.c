// A Node native addon whose one function JITs a fresh `syscall` at every call, as a JIT
// compiler would: `freshGetsockname(fd)` writes `syscall6` (see jit_syscall.c) into a
// new read-write-execute page, calls getsockname(fd) through it and returns the local
// port (or -errno). No Node headers needed: the few N-API functions are declared here
// and resolved from the node binary when it loads the addon.
// Build: gcc -O2 -shared -fPIC -o jit_addon.node jit_addon.c
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>

typedef struct napi_env__ *napi_env;
typedef struct napi_value__ *napi_value;
typedef struct napi_callback_info__ *napi_callback_info;
typedef int napi_status;
typedef napi_value (*napi_callback)(napi_env, napi_callback_info);
napi_status napi_create_function(napi_env, const char *, size_t, napi_callback, void *,
                                 napi_value *);
napi_status napi_set_named_property(napi_env, napi_value, const char *, napi_value);
napi_status napi_get_cb_info(napi_env, napi_callback_info, size_t *, napi_value *,
                             napi_value *, void **);
napi_status napi_get_value_int32(napi_env, napi_value, int32_t *);
napi_status napi_create_int32(napi_env, int32_t, napi_value *);

typedef long (*syscall6_fn)(long, long, long, long, long, long, long);

static const unsigned char CODE[] = {
    0x48, 0x89, 0xf8, 0x48, 0x89, 0xf7, 0x48, 0x89, 0xd6, 0x48, 0x89, 0xca, 0x4d,
    0x89, 0xc2, 0x4d, 0x89, 0xc8, 0x4c, 0x8b, 0x4c, 0x24, 0x08, 0x0f, 0x05, 0xc3,
};

static napi_value fresh_getsockname(napi_env env, napi_callback_info info) {
    size_t argc = 1;
    napi_value argv[1];
    int32_t fd = -1, port;
    napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
    if (argc > 0) napi_get_value_int32(env, argv[0], &fd);
    unsigned char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        port = -1;
    } else {
        memcpy(p, CODE, sizeof CODE);
        struct sockaddr_in a;
        socklen_t len = sizeof a;
        long r = ((syscall6_fn)p)(SYS_getsockname, fd, (long)&a, (long)&len, 0, 0, 0);
        port = r == 0 ? ntohs(a.sin_port) : (int32_t)r;
        munmap(p, 4096);
    }
    napi_value out;
    napi_create_int32(env, port, &out);
    return out;
}

napi_value napi_register_module_v1(napi_env env, napi_value exports) {
    napi_value f;
    napi_create_function(env, "freshGetsockname", (size_t)-1, fresh_getsockname, NULL, &f);
    napi_set_named_property(env, exports, "freshGetsockname", f);
    return exports;
}
