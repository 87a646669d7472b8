/* A program for the static-executable tests (issue 22), built static, static-PIE and
 * dynamic: prints its argv, FOO, what the auxiliary vector says of it, checks that its
 * .bss is zero and its data initialised, allocates, prints its stack's permissions
 * (PT_GNU_STACK) and exits with argc + 10. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>

static char zeroed[1 << 20];
static int initialised = 42;

int main(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        printf("argv[%d]=%s\n", i, argv[i]);
    const char *foo = getenv("FOO");
    printf("FOO=%s\n", foo ? foo : "(unset)");
    const char *execfn = (const char *)getauxval(AT_EXECFN);
    printf("AT_EXECFN=%s AT_BASE=%lu\n", execfn ? execfn : "(none)", getauxval(AT_BASE));
    printf("AT_RANDOM %s, AT_SYSINFO_EHDR %s\n", getauxval(AT_RANDOM) ? "set" : "unset",
           getauxval(AT_SYSINFO_EHDR) ? "set" : "unset");
    for (size_t i = 0; i < sizeof zeroed; i++)
        if (zeroed[i]) {
            puts(".bss not zeroed");
            return 99;
        }
    char *m = malloc(1 << 22);
    memset(m, 1, 1 << 22);
    free(m);
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[512];
    while (maps && fgets(line, sizeof line, maps))
        if (strstr(line, "[stack]")) {
            char *perms = strchr(line, ' ');
            printf("stack %.4s\n", perms ? perms + 1 : "?");
        }
    if (maps)
        fclose(maps);
    printf("data %d, ok\n", initialised);
    return argc + 10;
}
