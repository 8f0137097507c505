/*
 * wordfreq: counts the words of a stream and, at the end, outputs one line per distinct word,
 * "<count> <word>\n", most frequent first (ties in byte order of the word). A wasm-sandbox guest
 * in C with wasi-libc, built as a WASI reactor: a starting point for a guest that wants malloc,
 * snprintf and qsort.
 *
 *   node dist/cli.js examples/guests/c-wasi/wordfreq.wasm examples/demo-input.txt
 *
 * A word is a run of ASCII letters and digits and of bytes >= 0x80 (so UTF-8 text stays whole),
 * with A-Z lowered to a-z. Every other byte separates words.
 *
 * What it shows:
 *   - a reactor: wasi-libc's _initialize runs before init(); the WASI imports it brings are the
 *     host's capability-scoped ones (no files, no environment unless granted);
 *   - malloc'd state built in init(), grown in process_chunk, read out in flush(); a word cut
 *     across two chunks is carried over in a growing buffer;
 *   - stdout and stderr are diagnostics, never output: the summary written to stderr in flush()
 *     reaches the stream's 'stderr' event (the CLI prints it on standard error);
 *   - errors: a word longer than MAX_WORD bytes fails with status 2, malloc running out (the
 *     host's memory limit, limits.memory) with status 3, each with a message
 *     (ERR_WASM_GUEST_ERROR, err.status).
 *
 * Build (scripts/build-c-guests.sh):
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -I../../../include -o wordfreq.wasm wordfreq.c
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wasm-sandbox.h"

#define MAX_WORD 1024

struct entry {
    char *word; /* not NUL-terminated */
    size_t len;
    uint64_t count;
    uint32_t hash;
};

static struct entry *table; /* open addressing, capacity a power of two, word == NULL: empty */
static size_t capacity, distinct;
static uint64_t words;
static char *partial; /* the word the last chunk ended in */
static size_t partial_len;
static uint8_t *input; /* the region handed to the host */

/* Fails the current call with a formatted message. */
static int failf(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int failf(int status, const char *fmt, ...) {
    char msg[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sandbox_error(status, msg);
}

static uint32_t fnv1a(const char *s, size_t len) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static int grow(void) {
    size_t bigger = capacity * 2;
    struct entry *next = calloc(bigger, sizeof *next);
    if (!next) return 0;
    for (size_t i = 0; i < capacity; i++) {
        if (!table[i].word) continue;
        size_t j = table[i].hash & (bigger - 1);
        while (next[j].word) j = (j + 1) & (bigger - 1);
        next[j] = table[i];
    }
    free(table);
    table = next;
    capacity = bigger;
    return 1;
}

/* Counts one word; 0 when memory ran out. */
static int count(const char *word, size_t len) {
    uint32_t h = fnv1a(word, len);
    size_t i = h & (capacity - 1);
    for (; table[i].word; i = (i + 1) & (capacity - 1)) {
        if (table[i].hash == h && table[i].len == len && memcmp(table[i].word, word, len) == 0) {
            table[i].count++;
            words++;
            return 1;
        }
    }
    char *copy = malloc(len);
    if (!copy) return 0;
    memcpy(copy, word, len);
    table[i] = (struct entry){copy, len, 1, h};
    distinct++;
    words++;
    if (distinct * 4 >= capacity * 3 && !grow()) return 0; /* keep the load under 3/4 */
    return 1;
}

static int in_word(uint8_t c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80;
}

static int out_of_memory(void) {
    return failf(3, "wordfreq: out of memory after %zu distinct words", distinct);
}

int init(void) {
    capacity = 1024;
    table = calloc(capacity, sizeof *table);
    partial = malloc(MAX_WORD);
    if (!table || !partial) return out_of_memory();
    return SANDBOX_OK;
}

uint8_t *alloc(size_t len) {
    free(input); /* the host never touches an earlier region again */
    input = malloc(len ? len : 1);
    if (!input) abort(); /* a trap: the ABI's answer when alloc cannot provide the region */
    return input;
}

int process_chunk(uint8_t *ptr, size_t len) {
    size_t i = 0;
    while (i < len) {
        if (!in_word(ptr[i])) {
            if (partial_len) {
                if (!count(partial, partial_len)) return out_of_memory();
                partial_len = 0;
            }
            i++;
            continue;
        }
        size_t start = i;
        while (i < len && in_word(ptr[i])) {
            if (ptr[i] >= 'A' && ptr[i] <= 'Z') ptr[i] += 'a' - 'A';
            i++;
        }
        size_t n = i - start;
        if (partial_len + n > MAX_WORD)
            return failf(2, "wordfreq: a word longer than %d bytes (after %llu words)", MAX_WORD, (unsigned long long)words);
        if (i == len || partial_len) {
            /* The word may go on in the next chunk, or started in the last one: carry it. */
            memcpy(partial + partial_len, ptr + start, n);
            partial_len += n;
            if (i < len) {
                if (!count(partial, partial_len)) return out_of_memory();
                partial_len = 0;
            }
        } else if (!count((const char *)ptr + start, n)) {
            return out_of_memory();
        }
    }
    return SANDBOX_OK;
}

static int by_count_then_word(const void *a, const void *b) {
    const struct entry *x = a, *y = b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->word, y->word, n);
    if (c) return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

int flush(void) {
    if (partial_len) {
        if (!count(partial, partial_len)) return out_of_memory();
        partial_len = 0;
    }
    /* Pack the entries to the front of the table and sort them there. */
    size_t n = 0;
    for (size_t i = 0; i < capacity; i++)
        if (table[i].word) table[n++] = table[i];
    qsort(table, n, sizeof *table, by_count_then_word);

    static char out[65536];
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        size_t need = 20 + 1 + table[i].len + 1; /* count, space, word (at most MAX_WORD), newline */
        if (sizeof out - used < need) {
            sandbox_emit(out, used);
            used = 0;
        }
        used += (size_t)snprintf(out + used, sizeof out - used, "%llu ", (unsigned long long)table[i].count);
        memcpy(out + used, table[i].word, table[i].len);
        used += table[i].len;
        out[used++] = '\n';
    }
    sandbox_emit(out, used);
    fprintf(stderr, "wordfreq: %llu words, %zu distinct\n", (unsigned long long)words, distinct);
    return SANDBOX_OK;
}
