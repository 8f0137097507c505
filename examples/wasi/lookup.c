/*
 * lookup: exercises a granted (preopened) directory. Loads the lines of the file argv[1]
 * (e.g. /data/dict.txt, readable only if the runtime granted /data) into a hash set, then for
 * each line of stdin prints "+ <line>\n" if the line is in the set, "- <line>\n" if not.
 * Lines are compared as bytes without their '\n' (a '\r' is part of the line); every output
 * line ends in '\n', also for a last input line that had none.
 *
 * Exit status: 0; 2 with a message on stderr if argv[1] is missing or cannot be opened (the
 * expected result when the directory was not granted).
 */
#define _POSIX_C_SOURCE 200809L /* getline, ssize_t */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An open-addressing hash set of byte strings, grown to keep it at most half full. */
struct entry {
    char *s; /* NULL: empty slot */
    size_t len;
};
static struct entry *slots;
static size_t nslots, nused;

static uint32_t hash(const char *s, size_t len) { /* FNV-1a */
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

/* The slot holding (s, len), or the empty slot where it would go. nslots is a power of two. */
static struct entry *find(const char *s, size_t len) {
    static struct entry none; /* the answer of an empty set (add() grows the table first) */
    if (nslots == 0) return &none;
    size_t i = hash(s, len) & (nslots - 1);
    while (slots[i].s != NULL && !(slots[i].len == len && memcmp(slots[i].s, s, len) == 0))
        i = (i + 1) & (nslots - 1);
    return &slots[i];
}

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n, size);
    if (p == NULL) {
        fputs("lookup: out of memory\n", stderr);
        exit(1);
    }
    return p;
}

static void add(const char *s, size_t len) {
    if (2 * (nused + 1) > nslots) { /* rehash into a table twice the size */
        struct entry *old = slots;
        size_t old_n = nslots;
        nslots = nslots ? 2 * nslots : 1024;
        slots = xcalloc(nslots, sizeof *slots);
        for (size_t i = 0; i < old_n; i++)
            if (old[i].s != NULL) *find(old[i].s, old[i].len) = old[i];
        free(old);
    }
    struct entry *e = find(s, len);
    if (e->s != NULL) return; /* duplicate */
    e->s = xcalloc(len + 1, 1);
    memcpy(e->s, s, len);
    e->len = len;
    nused++;
}

/* Length of a line read by getline, without its '\n'. */
static size_t body_len(const char *line, ssize_t len) {
    return (size_t)len - (line[len - 1] == '\n');
}

static char inbuf[64 * 1024], outbuf[64 * 1024];

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs("usage: lookup DICT-FILE < lines\n", stderr);
        return 2;
    }
    /* An absolute path is resolved by wasi-libc against the preopened directories. */
    FILE *dict = fopen(argv[1], "r");
    if (dict == NULL) {
        fputs("lookup: cannot open ", stderr);
        fputs(argv[1], stderr);
        fputs("\n", stderr);
        return 2;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, dict)) > 0) add(line, body_len(line, len));
    fclose(dict);

    setvbuf(stdin, inbuf, _IOFBF, sizeof inbuf);
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    while ((len = getline(&line, &cap, stdin)) > 0) {
        size_t n = body_len(line, len);
        fputs(find(line, n)->s != NULL ? "+ " : "- ", stdout);
        fwrite(line, 1, n, stdout);
        putchar('\n');
    }
    return ferror(stdin) || fflush(stdout) != 0 ? 1 : 0;
}
