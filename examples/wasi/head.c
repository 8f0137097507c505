/*
 * head: prints the first N lines of stdin (N = argv[1], default 10), then exits with status 0
 * WITHOUT reading the rest of stdin. It tests early exit: the runtime must end the run cleanly
 * while the input is still flowing (stop feeding stdin, not fail on a closed pipe, not wait for
 * EOF). A last line without '\n' is printed as is. N = 0 prints nothing and reads nothing.
 *
 * It ends with exit(0), i.e. proc_exit(0) from inside the program, where cat.c and upper.c return
 * from main (then _start returns without calling proc_exit): the runtime sees both paths.
 */
#include <stdlib.h>
#include <unistd.h>

static char buf[64 * 1024]; /* static: the default wasm32 stack is only 64 KiB */

static void write_all(const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(1, p, n);
        if (w < 0) exit(1);
        p += w;
        n -= (size_t)w;
    }
}

int main(int argc, char **argv) {
    /* atoi: a non-number gives 0 lines; negative counts are taken as 0. */
    long want = argc > 1 ? atoi(argv[1]) : 10;
    long seen = 0;
    while (seen < want) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n == 0) break; /* EOF before N lines: everything was printed */
        if (n < 0) exit(1);
        ssize_t end = n;
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n' && ++seen == want) {
                end = i + 1; /* cut just after the N-th newline */
                break;
            }
        }
        write_all(buf, (size_t)end);
    }
    exit(0); /* proc_exit(0) with stdin possibly unread */
}
