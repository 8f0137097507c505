/*
 * wc: a stateful whole-stream program. Counts lines ('\n' bytes), words (maximal runs of bytes
 * that are not ASCII whitespace: space, \t, \n, \v, \f, \r) and bytes over all of stdin, and at
 * EOF prints exactly "<lines> <words> <bytes>\n", the output of examples/wc.wat (wcRef in
 * spec/helpers/reference.ts). A word may span two reads: in_word carries over.
 *
 * No printf: a hand-written decimal conversion keeps the module a few KiB instead of ~20 KiB.
 */
#include <stdint.h>
#include <unistd.h>

static unsigned char buf[64 * 1024]; /* static: the default wasm32 stack is only 64 KiB */

/* Writes v in decimal followed by `sep` at p; returns the end. */
static char *put_u64(char *p, uint64_t v, char sep) {
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    while (n > 0) *p++ = tmp[--n];
    *p++ = sep;
    return p;
}

int main(void) {
    uint64_t lines = 0, words = 0, bytes = 0;
    int in_word = 0;
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n == 0) break;
        if (n < 0) return 1;
        bytes += (uint64_t)n;
        for (ssize_t i = 0; i < n; i++) {
            unsigned char c = buf[i];
            int ws = c == ' ' || (c >= '\t' && c <= '\r');
            lines += c == '\n';
            words += !ws && !in_word;
            in_word = !ws;
        }
    }
    char out[3 * 21], *end = out;
    end = put_u64(end, lines, ' ');
    end = put_u64(end, words, ' ');
    end = put_u64(end, bytes, '\n');
    /* One short write; a partial write of 63 bytes would be a broken runtime, still checked. */
    return write(1, out, (size_t)(end - out)) == end - out ? 0 : 1;
}
