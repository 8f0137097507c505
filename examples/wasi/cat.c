/*
 * cat: copies stdin to stdout unchanged. The benchmark baseline: the same read/write loop as
 * upper.c without the per-byte work, so the difference between the two is the cost of the work
 * and not of the runtime's stdio.
 *
 * It uses read()/write() on fds 0 and 1 directly (each call is one fd_read / fd_write) with a
 * 64 KiB buffer, not stdio, whose 1 KiB buffers would multiply the number of host calls.
 * The buffer is static: the default wasm32 stack is only 64 KiB in all.
 */
#include <unistd.h>

static char buf[64 * 1024];

/* write() may accept fewer bytes than asked (a full pipe on the host side): loop until done. */
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
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n == 0) return 0; /* EOF: return from main, so _start returns without proc_exit */
        if (n < 0 || write_all(buf, (size_t)n) < 0) return 1;
    }
}
