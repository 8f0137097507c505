/*
 * counter: per-record isolation. A static counter, kept in the instance's linear memory, is
 * incremented once per run of _start; the program prints the counter as "<n>\n", then copies
 * stdin to stdout. Run in a fresh instance per record it must always print 1: a 2 means the
 * runtime reused an instance, and state (anything one record left in memory) leaked across.
 */
#include <unistd.h>

/*
 * volatile: otherwise LLVM may see that only main uses this global and turn it into a local
 * variable of main, which would print 1 even on a reused instance and hide the very leak.
 */
static volatile unsigned counter;

static char buf[64 * 1024]; /* static: the default wasm32 stack is only 64 KiB */

static int write_all(const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(1, p, n);
        if (w < 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int main(void) {
    unsigned v = ++counter;
    char num[12], *p = num + sizeof num;
    *--p = '\n';
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    if (write_all(p, (size_t)(num + sizeof num - p)) < 0) return 1;
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n == 0) return 0;
        if (n < 0 || write_all(buf, (size_t)n) < 0) return 1;
    }
}
