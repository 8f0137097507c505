/*
 * wasm-sandbox.h: write a wasm-sandbox guest (ABI v1 and v1.1, docs/abi.md) in C.
 *
 * One header, nothing to link. It declares
 *   - the four exports with the exact types the host checks at load (alloc, process_chunk, and the
 *     optional init and flush): define the ones you need, under these names, and clang exports them
 *     (an export you do not define is simply absent);
 *   - the two imports, sandbox_emit and sandbox_fail, and small helpers around them;
 *   - the optional ABI v1.1 imports: sandbox_config_size / sandbox_config_read (the caller's
 *     `guestConfig`) and sandbox_log (a rate-limited log channel). A function becomes an import
 *     only if you call it, so a guest that calls none of them is a v1 guest and loads anywhere;
 *   - for guests without a C library, a bump arena over the memory above the program's data
 *     (sandbox_arena_alloc / _mark / _release), and a ready-made alloc on top of it.
 *
 * Without a C library (only these imports, nothing else):
 *
 *   clang --target=wasm32 -O2 -ffreestanding -nostdlib -mbulk-memory \
 *         -Wl,--no-entry -I<package>/include -o guest.wasm guest.c
 *
 *   -ffreestanding   clang's own <stdint.h>/<stddef.h>, not the host system's
 *   -mbulk-memory    copies and fills become memory.copy / memory.fill instead of calls to a
 *                    memcpy / memset that is not there (Node.js 20 has bulk memory)
 *   -Wl,--no-entry   a library, not a program: no _start
 *
 * With wasi-libc, as a reactor (malloc, snprintf, qsort, ...; stdout and stderr become the
 * stream's 'stderr' diagnostics, never its output):
 *
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -I<package>/include -o guest.wasm guest.c
 *
 *   Use malloc there, not the arena: the arena and malloc would both claim the memory above
 *   __heap_base, so the arena is left out when __wasi__ is defined.
 *
 * The memory is exported as "memory" (wasm-ld's default). Include this header in one .c file:
 * the arena's state and the helpers are static.
 *
 * Examples: examples/guests/c (no libc), examples/guests/c-wasi (wasi-libc reactor).
 */
#ifndef WASM_SANDBOX_H
#define WASM_SANDBOX_H

#include <stddef.h>
#include <stdint.h>

#if !defined(__wasm32__)
#error "wasm-sandbox.h is for WebAssembly guests: compile with clang --target=wasm32 (or wasm32-wasi)"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Exports ------------------------------------------------------------------------------ */

/* Exports a function under `name` (e.g. SANDBOX_EXPORT(my_step) for extra exports of your own;
 * the host ignores exports it does not know). */
#define SANDBOX_EXPORT(name) __attribute__((export_name(#name)))

/* Status codes: 0 is success; any other value fails the stream with ERR_WASM_GUEST_ERROR carrying
 * the value as err.status. Use small positive values of your own. */
#define SANDBOX_OK 0

/* alloc(len): the address of at least `len` bytes the host copies each chunk into. Called once
 * before the first chunk, again only for a chunk larger than the region; after that the old region
 * is yours again. The region belongs to the host between calls: keep no data there. Trap (or
 * return an address outside memory) if you cannot provide it. SANDBOX_DEFINE_ARENA_ALLOC() below
 * defines it for you. */
SANDBOX_EXPORT(alloc) uint8_t *alloc(size_t len);

/* process_chunk(ptr, len): the `len` input bytes at ptr (ptr is the latest alloc result). They may
 * be modified in place and emitted from. Chunks are arbitrary cuts of the input unless the stream
 * uses the `delimiter` option, and len may be 0. Returns SANDBOX_OK or an error status. */
SANDBOX_EXPORT(process_chunk) int process_chunk(uint8_t *ptr, size_t len);

/* init(): optional, once before anything else. */
SANDBOX_EXPORT(init) int init(void);

/* flush(): optional, once after the last chunk when the input has ended: emit what is pending. */
SANDBOX_EXPORT(flush) int flush(void);

/* ---- Imports ------------------------------------------------------------------------------ */

/* Outputs the bytes [ptr, ptr+len). The host copies them before returning: reuse the memory at
 * once. Call it from process_chunk and flush only, as often as you like (fewer, larger calls are
 * cheaper). */
__attribute__((import_module("sandbox"), import_name("emit")))
void sandbox_emit(const void *ptr, size_t len);

/* Sets the error message (UTF-8) of the call in progress; the last one wins. It is used only if
 * the call then returns a non-zero status, and it does not stop the guest: return afterwards. */
__attribute__((import_module("sandbox"), import_name("fail")))
void sandbox_fail(const char *msg, size_t len);

static inline size_t sandbox_strlen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

/* Emits a NUL-terminated string (without the NUL). */
static inline void sandbox_emit_str(const char *s) { sandbox_emit(s, sandbox_strlen(s)); }

/* Sets the error message from a NUL-terminated string and returns `status`, so that
 *   return sandbox_error(2, "input is not text");
 * fails the call in one line. */
static inline int sandbox_error(int status, const char *msg) {
    sandbox_fail(msg, sandbox_strlen(msg));
    return status;
}

/* ---- ABI v1.1 (optional; docs/abi.md#abi-v11-configuration-logging-backtraces) ------------- */

/* The length in bytes of the configuration the caller gave as `guestConfig`; 0 if none. */
__attribute__((import_module("sandbox"), import_name("config_size")))
size_t sandbox_config_size(void);

/* Copies the first min(len, size) configuration bytes to ptr and returns how many. [ptr, ptr+len)
 * must lie inside memory (ERR_WASM_OUT_OF_BOUNDS otherwise). Usually called once, in init():
 *   static char pattern[256];
 *   size_t n = sandbox_config_read(pattern, sizeof pattern);  // n < sandbox_config_size(): cut */
__attribute__((import_module("sandbox"), import_name("config_read")))
size_t sandbox_config_read(void *ptr, size_t len);

enum { SANDBOX_LOG_ERROR = 0, SANDBOX_LOG_WARN = 1, SANDBOX_LOG_INFO = 2, SANDBOX_LOG_DEBUG = 3 };

/* Logs the UTF-8 message [msg, msg+len) at a SANDBOX_LOG_* level: a 'log' event on the stream and
 * DEBUG=wasm-sandbox:guest, never output. Each guest call (init, a chunk, flush) may log at most 32
 * messages and 8 KiB, each cut to 1 KiB; the rest is dropped and counted, never an error. */
__attribute__((import_module("sandbox"), import_name("log")))
void sandbox_log(int level, const char *msg, size_t len);

/* Logs a NUL-terminated string (without the NUL). */
static inline void sandbox_log_str(int level, const char *s) { sandbox_log(level, s, sandbox_strlen(s)); }

/* ---- Arena (no C library) ----------------------------------------------------------------- */
#ifndef __wasi__

/* First free byte after the data and the stack, defined by wasm-ld. */
extern unsigned char __heap_base;

/* The arena's top: the next free byte, or 0 before the first allocation. Linear memory, so it is
 * part of the guest's state and survives checkpoints like everything else. */
static uintptr_t sandbox__arena_top;

/* `size` bytes aligned to 16, growing memory as needed; NULL when memory cannot grow (the host's
 * memory limit, `limits.memory`, is reached) or the size does not fit in 32 bits. Nothing is
 * freed one by one: release everything above a mark at once. */
static inline void *sandbox_arena_alloc(size_t size) {
    uint64_t top = sandbox__arena_top ? sandbox__arena_top : (uintptr_t)&__heap_base;
    top = (top + 15) & ~(uint64_t)15;
    uint64_t end = top + size;
    uint64_t have = (uint64_t)__builtin_wasm_memory_size(0) * 65536; /* 64-bit: 65536 pages is 4 GiB */
    if (end > have) {
        uint64_t pages = (end - have + 65535) / 65536;
        if (end > ((uint64_t)1 << 32) || __builtin_wasm_memory_grow(0, (size_t)pages) == (size_t)-1) return NULL;
    }
    sandbox__arena_top = (uintptr_t)end;
    return (void *)(uintptr_t)top;
}

/* The current top, to release back to later. */
static inline uintptr_t sandbox_arena_mark(void) {
    return sandbox__arena_top ? sandbox__arena_top : (uintptr_t)&__heap_base;
}

/* Frees everything allocated since `mark` (memory is not shrunk; wasm cannot). */
static inline void sandbox_arena_release(uintptr_t mark) { sandbox__arena_top = mark; }

/* Defines alloc() on the arena. The input region comes from the arena and is never released
 * (the host calls alloc once, again only for a bigger chunk: a few regions at most), so a guest
 * can use the arena for scratch space in each call:
 *
 *   uintptr_t mark = sandbox_arena_mark();
 *   char *out = sandbox_arena_alloc(2 * len);
 *   ...
 *   sandbox_arena_release(mark);
 *
 * as long as it releases what it took before it returns; state kept across calls goes in static
 * variables, or in arena memory taken in init() before the first alloc. */
#define SANDBOX_DEFINE_ARENA_ALLOC()                        \
    uint8_t *alloc(size_t len) {                            \
        uint8_t *region = (uint8_t *)sandbox_arena_alloc(len); \
        if (!region) __builtin_trap();                      \
        return region;                                      \
    }

#endif /* __wasi__ */

#ifdef __cplusplus
}
#endif

#endif /* WASM_SANDBOX_H */
