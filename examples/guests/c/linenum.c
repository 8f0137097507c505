/*
 * linenum: numbers the lines of a text stream like `cat -n` (the number right-aligned in 6
 * columns, a tab, the line), and refuses binary input. A wasm-sandbox guest in C without a C
 * library: a starting point for a stateful, line-based filter.
 *
 *   node dist/cli.js examples/guests/c/linenum.wasm examples/demo-input.txt
 *
 * What it shows:
 *   - state across chunks: chunks are arbitrary cuts of the input (no `delimiter` needed), so a
 *     line can start in one chunk and end in the next; the line count and "at a line start" live in
 *     static variables (linear memory), which the host keeps between calls and captures in
 *     checkpoints;
 *   - output through a scratch buffer from the arena, emitted in large pieces rather than one
 *     sandbox_emit per line, and released before returning;
 *   - errors: a NUL byte fails the stream with status 2 and a message naming the line
 *     (ERR_WASM_GUEST_ERROR, err.status 2); a scratch buffer the memory limit does not allow
 *     fails it with status 3.
 *
 * Build (scripts/build-c-guests.sh):
 *   clang --target=wasm32 -O2 -ffreestanding -nostdlib -mbulk-memory -Wl,--no-entry \
 *         -I../../../include -o linenum.wasm linenum.c
 */
#include "wasm-sandbox.h"

#define OUT_SIZE 65536
#define MAX_PREFIX 21 /* 20 digits of a uint64_t and the tab */

static uint64_t line = 0;      /* lines started so far */
static int at_line_start = 1;  /* the next byte starts a line */

/* Writes `n` in decimal so that it ends just before `end`; returns where it starts. */
static char *format_u64(char *end, uint64_t n) {
    do {
        *--end = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    return end;
}

/* "<n>" right-aligned in 6 columns, then a tab; returns the length written at out. */
static size_t prefix(uint8_t *out, uint64_t n) {
    char digits[20];
    char *end = digits + sizeof digits;
    char *start = format_u64(end, n);
    size_t len = (size_t)(end - start), pos = 0;
    for (size_t pad = len; pad < 6; pad++) out[pos++] = ' ';
    for (char *p = start; p < end; p++) out[pos++] = (uint8_t)*p;
    out[pos++] = '\t';
    return pos;
}

SANDBOX_DEFINE_ARENA_ALLOC()

int process_chunk(uint8_t *in, size_t len) {
    uintptr_t mark = sandbox_arena_mark();
    uint8_t *out = sandbox_arena_alloc(OUT_SIZE);
    if (!out) return sandbox_error(3, "linenum: out of memory for the output buffer");

    int status = SANDBOX_OK;
    size_t used = 0;
    for (size_t i = 0; i < len; i++) {
        if (OUT_SIZE - used < MAX_PREFIX + 1) {
            sandbox_emit(out, used);
            used = 0;
        }
        uint8_t c = in[i];
        if (at_line_start) {
            used += prefix(out + used, ++line);
            at_line_start = 0;
        }
        if (c == 0) {
            char msg[64] = "linenum: binary input (a NUL byte) on line ";
            char digits[20];
            char *end = digits + sizeof digits;
            size_t at = sandbox_strlen(msg);
            for (char *p = format_u64(end, line); p < end; p++) msg[at++] = *p;
            msg[at] = 0;
            status = sandbox_error(2, msg);
            break;
        }
        out[used++] = c;
        if (c == '\n') at_line_start = 1;
    }
    if (status == SANDBOX_OK) sandbox_emit(out, used);
    sandbox_arena_release(mark);
    return status;
}
