/*
 * escape: tries to reach things a sandboxed program must not see unless they were granted, and
 * prints one line per attempt, "<name>: denied" or "<name>: OPEN". Used by the security tests:
 * with nothing granted every line must say "denied". Exit status 0 whatever it finds.
 *
 *   open /etc/passwd           a host file by absolute path
 *   open ../                   the parent of the working directory
 *   open /proc/self/environ    the host process's environment through procfs
 *   opendir /                  listing the root
 *   getenv HOME                one environment variable
 *   environ                    any environment variable at all
 *   open <dir>/../etc/passwd   for each argv[i] (a granted directory such as /data): climbing
 *                              out of a granted directory with "..", which the runtime (not
 *                              wasi-libc) must refuse
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

/* fputs, not printf: printf alone would triple the size of the module. */
static void report(const char *what, const char *arg, int open) {
    fputs(what, stdout);
    fputs(arg, stdout);
    fputs(open ? ": OPEN\n" : ": denied\n", stdout);
}

static void try_open(const char *path) {
    int fd = open(path, O_RDONLY);
    report("open ", path, fd >= 0);
    if (fd >= 0) close(fd);
}

int main(int argc, char **argv) {
    try_open("/etc/passwd");
    try_open("../");
    try_open("/proc/self/environ");

    DIR *d = opendir("/");
    report("opendir ", "/", d != NULL);
    if (d != NULL) closedir(d);

    report("getenv ", "HOME", getenv("HOME") != NULL);
    report("environ", "", environ != NULL && environ[0] != NULL);

    static const char up[] = "/../etc/passwd";
    for (int i = 1; i < argc; i++) {
        size_t n = strlen(argv[i]);
        char *path = malloc(n + sizeof up);
        if (path == NULL) return 1;
        memcpy(path, argv[i], n);
        memcpy(path + n, up, sizeof up);
        try_open(path);
        free(path);
    }
    return 0;
}
