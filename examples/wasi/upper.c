/*
 * upper: ASCII upper-cases stdin to stdout (a-z -> A-Z, every other byte unchanged), the same
 * transformation as examples/upper.wat. A filter with a hot loop: it is the benchmark program,
 * so it reads and writes fds 0 and 1 directly with a 64 KiB buffer (one fd_read and one
 * fd_write per 64 KiB), never stdio with its small buffers. Compare with cat.c, the baseline.
 */
#include <unistd.h>

/* Static, not on the stack: the default wasm32 stack is only 64 KiB. */
static unsigned char buf[64 * 1024];

/* write() may accept fewer bytes than asked (a full pipe on the host side): loop until done. */
static int write_all(const unsigned char *p, size_t n) {
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
        if (n == 0) return 0; /* EOF */
        if (n < 0) return 1;
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] >= 'a' && buf[i] <= 'z') buf[i] -= 0x20;
        }
        if (write_all(buf, (size_t)n) < 0) return 1;
    }
}
