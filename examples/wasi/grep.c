/*
 * grep: a per-record filter. Prints the lines of stdin that contain the byte string argv[1]
 * (default "ERROR", the pattern of examples/grep.wasm), each with its '\n'; a last line without
 * '\n' is printed as is. An empty pattern matches every line. Same output as grepRef in
 * spec/helpers/reference.ts.
 *
 * Unlike grep(1) the exit status is always 0, matched or not: keep it simple.
 *
 * stdio's getline() is the clearest way to cut lines of any length (NUL bytes included), so this
 * one uses stdio, with 64 KiB buffers set on both streams so that each host call still moves
 * up to 64 KiB (musl's default is 1 KiB).
 */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <string.h>

static char inbuf[64 * 1024], outbuf[64 * 1024];

int main(int argc, char **argv) {
    const char *pat = argc > 1 ? argv[1] : "ERROR";
    size_t pat_len = strlen(pat);
    setvbuf(stdin, inbuf, _IOFBF, sizeof inbuf);
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);

    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) > 0) {
        size_t body = (size_t)len - (line[len - 1] == '\n'); /* match without the '\n' */
        if (memmem(line, body, pat, pat_len) != NULL) fwrite(line, 1, (size_t)len, stdout);
    }
    return ferror(stdin) || fflush(stdout) != 0 ? 1 : 0;
}
