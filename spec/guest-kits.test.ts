/**
 * The guest kits (examples/guests/): each example runs through wasmTransform, inline and in a
 * worker, against a JS reference over random inputs split at random points, and its failure paths
 * give the codes docs/abi.md specifies. The C guests (include/wasm-sandbox.h) are the committed
 * .wasm files that scripts/build-c-guests.sh builds; the AssemblyScript one is compiled here, with
 * the `assemblyscript` package's asc, into a temporary folder. The Rust one is source only (no
 * Rust toolchain on this machine).
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import fc from 'fast-check'
import { wasmTransform, type SandboxOptions } from '../lib/index.js'
import { example, repoRoot, splitLines } from './helpers/reference.js'
import { randomBytes, randomLines, run } from './helpers/streams.js'
import { tempDir } from './helpers/temp.js'

const ISOLATIONS = ['inline', 'worker'] as const
/** Property runs per isolation: a worker stream costs a worker start-up. */
const RUNS = { inline: 40, worker: 12 } as const

/** Imports and exports of a module, as "module.name" / "name" lists. */
function shape(bytes: Buffer): { imports: string[]; exports: string[] } {
  const module = new WebAssembly.Module(bytes)
  return {
    imports: WebAssembly.Module.imports(module).map((i) => `${i.module}.${i.name}`).sort(),
    exports: WebAssembly.Module.exports(module).map((e) => e.name).sort(),
  }
}

/** The initial size of a module's memory, in bytes (it is instantiated with do-nothing imports). */
function initialMemory(bytes: Buffer): number {
  const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), { sandbox: { emit() {}, fail() {} } })
  return (instance.exports.memory as WebAssembly.Memory).buffer.byteLength
}

/** Random text, about one byte in eight a '\n', with no NUL bytes; may end without '\n'. */
function randomText(length: number, seed: number): Buffer {
  const out = randomBytes(length, seed)
  for (let i = 0; i < out.length; i++) {
    const b = out[i]!
    out[i] = b % 8 === 0 ? 0x0a : b === 0 ? 0x20 : b
  }
  return out
}

/** Random input, cut by the source at random sizes and by the host at a random bufferSize. */
const splits = {
  length: fc.integer({ min: 0, max: 20_000 }),
  seed: fc.integer({ min: 1, max: 1 << 30 }),
  sizes: fc.array(fc.integer({ min: 1, max: 9000 }), { minLength: 1, maxLength: 5 }),
  bufferSize: fc.integer({ min: 1024, max: 8192 }),
}

// ---- C, no libc: examples/guests/c/linenum ---------------------------------------------------

/** linenum: `cat -n`: each line (also a last one without '\n') after "<n right-aligned in 6>\t". */
function linenumRef(input: Buffer): Buffer {
  return Buffer.concat(splitLines(input).flatMap((line, i) => [Buffer.from(`${String(i + 1).padStart(6)}\t`), line]))
}

describe('C guest without libc (examples/guests/c/linenum.wasm)', () => {
  const linenum = example('guests/c/linenum.wasm')

  it('imports only sandbox.emit and sandbox.fail, and exports the ABI (the header declares it)', () => {
    assert.deepEqual(shape(readFileSync(linenum)), {
      imports: ['sandbox.emit', 'sandbox.fail'],
      exports: ['alloc', 'memory', 'process_chunk'],
    })
  })

  it('the reference is cat -n', () => {
    assert.equal(linenumRef(Buffer.from('a\n\nb')).toString(), '     1\ta\n     2\t\n     3\tb')
  })

  for (const isolation of ISOLATIONS) {
    it(`numbers lines like the reference over random text split at random points (${isolation})`, async () => {
      await fc.assert(
        fc.asyncProperty(splits.length, splits.seed, splits.sizes, splits.bufferSize, async (length, seed, sizes, bufferSize) => {
          const input = randomText(length, seed)
          const output = await run(wasmTransform(linenum, { isolation, bufferSize }), input, sizes)
          assert.ok(output.equals(linenumRef(input)), `linenum differs (length ${length}, seed ${seed}, sizes ${sizes}, bufferSize ${bufferSize})`)
        }),
        { numRuns: RUNS[isolation] },
      )
    })

    it(`past 999999 lines the number widens, as cat -n does (${isolation})`, async () => {
      const input = Buffer.alloc(1_000_001, 0x0a)
      const output = await run(wasmTransform(linenum, { isolation }), input, [65536])
      const expected = Array.from({ length: input.length }, (_, i) => `${String(i + 1).padStart(6)}\t\n`).join('')
      assert.ok(output.equals(Buffer.from(expected)))
      assert.ok(output.subarray(-26).equals(Buffer.from('999999\t\n1000000\t\n1000001\t\n')))
    })

    it(`a NUL byte fails the stream with status 2 and a message naming the line (${isolation})`, async () => {
      const input = Buffer.from('first\nsecond\nthird\nfou\0rth\nfifth\n')
      const nul = input.indexOf(0)
      await assert.rejects(run(wasmTransform(linenum, { isolation, bufferSize: 1024 }), input, [5]), (err: any) => {
        assert.equal(err.code, 'ERR_WASM_GUEST_ERROR')
        assert.equal(err.status, 2)
        assert.match(err.message, /linenum: binary input \(a NUL byte\) on line 4$/)
        assert.ok(err.offset <= nul, `the failing chunk starts at or before the NUL (offset ${err.offset})`)
        return true
      })
    })
  }

  it('the arena at the memory limit: one page short of the scratch buffer is the memory limit (status 3), one page more runs', async () => {
    // alloc(1024) fits in the initial memory, the 64 KiB scratch buffer needs one more page.
    const initial = initialMemory(readFileSync(linenum))
    const input = Buffer.from('a line\n')
    const options = (memory: number): SandboxOptions => ({ isolation: 'inline', bufferSize: 1024, limits: { memory } })
    // Its grow was refused, then it returned 3: the limit, with the status and its message.
    await assert.rejects(run(wasmTransform(linenum, options(initial)), input), {
      code: 'ERR_WASM_MEMORY_LIMIT',
      status: 3,
      message: /asked for 65536 bytes more .* then the guest returned status 3 \(sandbox\.fail: "linenum: out of memory for the output buffer"\)/,
    })
    assert.equal((await run(wasmTransform(linenum, options(initial + 65536)), input)).toString(), '     1\ta line\n')
  })

  it('its state is the host\'s to restore: with recoveryStrategy skip, numbering goes on from before the failed chunk (worker)', async () => {
    // The chunk holding the NUL fails and is skipped; the host restores the guest to its state
    // before that chunk, so the lines after it are numbered on from there, never from 1 again.
    const input = Buffer.concat([randomText(5000, 7), Buffer.from('\nbad\0line\n'), randomText(5000, 8)])
    const stream = wasmTransform(linenum, { bufferSize: 1024, recoveryStrategy: 'skip' })
    const errors: { code?: string; status?: number }[] = []
    stream.on('chunk-error', (err) => errors.push(err))
    const output = await run(stream, input, [333])
    assert.deepEqual(errors.map((e) => [e.code, e.status]), [['ERR_WASM_GUEST_ERROR', 2]], 'one chunk skipped')
    const numbers = splitLines(output).map((line) => Number(/^ *(\d+)\t/.exec(line.toString('latin1'))?.[1]))
    assert.ok(numbers.length > 20 && numbers.length < splitLines(input).length, `${numbers.length} lines out`)
    numbers.forEach((n, i) => assert.equal(n, i + 1, `output line ${i + 1} is numbered ${n}`))
  })
})

// ---- C with wasi-libc (a reactor): examples/guests/c-wasi/wordfreq ---------------------------

const inWord = (c: number): boolean => (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c >= 0x80

/** wordfreq: "<count> <word>\n" per distinct word, count descending, then word bytes ascending. */
function wordfreqRef(input: Buffer): { output: Buffer; words: number; distinct: number } {
  const counts = new Map<string, number>()
  let words = 0
  for (let i = 0; i < input.length; ) {
    if (!inWord(input[i]!)) {
      i++
      continue
    }
    const start = i
    while (i < input.length && inWord(input[i]!)) i++
    const word = Buffer.from(input.subarray(start, i))
    for (let j = 0; j < word.length; j++) if (word[j]! >= 0x41 && word[j]! <= 0x5a) word[j]! += 0x20
    const key = word.toString('latin1')
    counts.set(key, (counts.get(key) ?? 0) + 1)
    words++
  }
  const sorted = [...counts].sort(([a, x], [b, y]) => y - x || Buffer.compare(Buffer.from(a, 'latin1'), Buffer.from(b, 'latin1')))
  const output = Buffer.concat(sorted.map(([word, n]) => Buffer.concat([Buffer.from(`${n} `), Buffer.from(word, 'latin1'), Buffer.from('\n')])))
  return { output, words, distinct: counts.size }
}

/** Words from a small vocabulary (with case, digits and UTF-8), separated by punctuation and space. */
function randomWords(length: number, seed: number): Buffer {
  const raw = randomBytes(length + 1, seed)
  const vocabulary = ['the', 'The', 'THE', 'fox', 'x', 'a1', '42', 'café', 'naïve', 'Ünïcode', 'error', 'ERROR', 'zz', 'q']
  const separators = [' ', ' ', '\n', ', ', '.', '-', '\t', '!? ']
  const parts: string[] = []
  let size = 0
  for (let i = 0; size < length; i++) {
    // Now and then a word made of random bytes of the vocabulary's alphabet, so words are not all known.
    const word = raw[i % raw.length]! % 9 === 0 ? `w${raw[(i * 13) % raw.length]}` : vocabulary[raw[i % raw.length]! % vocabulary.length]!
    const part = word + separators[raw[(i * 7) % raw.length]! % separators.length]!
    parts.push(part)
    size += Buffer.byteLength(part)
  }
  return Buffer.from(parts.join('')).subarray(0, length)
}

describe('C guest with wasi-libc, a reactor (examples/guests/c-wasi/wordfreq.wasm)', () => {
  const wordfreq = example('guests/c-wasi/wordfreq.wasm')

  it('is a reactor: exports _initialize beside the ABI, imports WASI functions and the sandbox', () => {
    const { imports, exports } = shape(readFileSync(wordfreq))
    assert.deepEqual(exports, ['_initialize', 'alloc', 'flush', 'init', 'memory', 'process_chunk'])
    assert.ok(imports.includes('sandbox.emit') && imports.includes('sandbox.fail'))
    assert.ok(imports.includes('wasi_snapshot_preview1.fd_write'))
    assert.ok(imports.every((i) => i.startsWith('sandbox.') || i.startsWith('wasi_snapshot_preview1.')), imports.join(', '))
  })

  for (const isolation of ISOLATIONS) {
    it(`counts words like the reference over random text split at random points (${isolation})`, async () => {
      await fc.assert(
        fc.asyncProperty(splits.length, splits.seed, splits.sizes, splits.bufferSize, async (length, seed, sizes, bufferSize) => {
          const input = randomWords(length, seed)
          const output = await run(wasmTransform(wordfreq, { isolation, bufferSize }), input, sizes)
          assert.ok(output.equals(wordfreqRef(input).output), `wordfreq differs (length ${length}, seed ${seed}, sizes ${sizes}, bufferSize ${bufferSize})`)
        }),
        { numRuns: RUNS[isolation] },
      )
    })

    it(`its stderr summary is a 'stderr' event, never output (${isolation})`, async () => {
      const input = randomWords(50_000, 3)
      const stream = wasmTransform(wordfreq, { isolation, bufferSize: 4096 })
      const diagnostics: Buffer[] = []
      stream.on('stderr', (chunk: Buffer) => diagnostics.push(chunk))
      const output = await run(stream, input, [1000])
      const ref = wordfreqRef(input)
      assert.ok(output.equals(ref.output))
      assert.equal(Buffer.concat(diagnostics).toString(), `wordfreq: ${ref.words} words, ${ref.distinct} distinct\n`)
    })

    it(`a word of 1024 bytes is counted, one of 1025 fails with status 2 (${isolation})`, async () => {
      // Cut into 100-byte chunks, so the long word is carried across many of them.
      const ok = Buffer.from(`a ${'b'.repeat(1024)} c`)
      assert.equal((await run(wasmTransform(wordfreq, { isolation, bufferSize: 1024 }), ok, [100])).toString(), `1 a\n1 ${'b'.repeat(1024)}\n1 c\n`)
      const tooLong = Buffer.from(`a ${'b'.repeat(1025)} c`)
      await assert.rejects(run(wasmTransform(wordfreq, { isolation, bufferSize: 1024 }), tooLong, [100]), {
        code: 'ERR_WASM_GUEST_ERROR',
        status: 2,
        message: /wordfreq: a word longer than 1024 bytes \(after 1 words\)/,
      })
    })
  }

  it('malloc failing at the memory limit is ERR_WASM_MEMORY_LIMIT, with its status 3 and message', async () => {
    // 60 000 distinct words need about 4 MiB of table and copies; 1 MiB of memory does not hold them.
    const input = Buffer.from(Array.from({ length: 60_000 }, (_, i) => `w${i}`).join(' '))
    await assert.rejects(run(wasmTransform(wordfreq, { bufferSize: 4096, limits: { memory: 1 << 20 } }), input, [65536]), {
      code: 'ERR_WASM_MEMORY_LIMIT',
      status: 3,
      message: /memory limit of 1048576 bytes.*then the guest returned status 3 \(sandbox\.fail: "wordfreq: out of memory after \d+ distinct words"\)/,
    })
    // The same input with the default memory limit runs.
    const output = await run(wasmTransform(wordfreq, { bufferSize: 4096 }), input, [65536])
    assert.ok(output.equals(wordfreqRef(input).output))
  })
})

// ---- The committed C builds -----------------------------------------------------------------

/** Why the C toolchain cannot run here, or '' when clang, wasm-ld and wasi-libc are installed. */
function missingToolchain(): string {
  if (spawnSync('clang', ['--version']).status !== 0) return 'clang is not installed'
  if (spawnSync('wasm-ld', ['--version']).status !== 0) return 'lld (wasm-ld) is not installed'
  if (!process.env.WASI_SYSROOT && !existsSync('/usr/lib/wasm32-wasi/libc.a')) return 'wasi-libc is not installed'
  return ''
}

describe('committed C builds', () => {
  it('match a fresh build of their sources (scripts/build-c-guests.sh --check)', { skip: missingToolchain() || false }, () => {
    const check = spawnSync('bash', [join(repoRoot, 'scripts', 'build-c-guests.sh'), '--check'], { encoding: 'utf8' })
    assert.equal(check.status, 0, `a committed .wasm is stale: run scripts/build-c-guests.sh\n${check.stderr}`)
  })

  it('the header: init and flush are exported when defined, the arena holds state, sandbox_error fails', { skip: missingToolchain() || false }, async (t) => {
    const dir = tempDir(t, 'wasm-sandbox-header-')
    // A byte counter with a greeting kept in arena memory taken in init().
    writeFileSync(
      join(dir, 'count.c'),
      `#include "wasm-sandbox.h"
static uint64_t total;
static char *label;
int init(void) {
    label = sandbox_arena_alloc(7);
    if (!label) return 1;
    for (int i = 0; i < 7; i++) label[i] = "bytes: "[i];
    return SANDBOX_OK;
}
SANDBOX_DEFINE_ARENA_ALLOC()
int process_chunk(uint8_t *ptr, size_t len) {
    for (size_t i = 0; i < len; i++) if (ptr[i] == '!') return sandbox_error(5, "count: no '!' please");
    total += len;
    return SANDBOX_OK;
}
int flush(void) {
    char digits[20], *end = digits + sizeof digits, *p = end;
    do { *--p = (char)('0' + total % 10); total /= 10; } while (total);
    sandbox_emit(label, 7);
    sandbox_emit(p, (size_t)(end - p));
    sandbox_emit_str("\\n");
    return SANDBOX_OK;
}
`,
    )
    const flags = ['--target=wasm32', '-O2', '-std=c11', '-Wall', '-Wextra', '-Werror', '-ffreestanding', '-nostdlib', '-mbulk-memory', '-Wl,--no-entry']
    const cc = spawnSync('clang', [...flags, `-I${join(repoRoot, 'include')}`, '-o', 'count.wasm', 'count.c'], { cwd: dir, encoding: 'utf8' })
    assert.equal(cc.status, 0, cc.stderr)
    const bytes = readFileSync(join(dir, 'count.wasm'))
    assert.deepEqual(shape(bytes).exports, ['alloc', 'flush', 'init', 'memory', 'process_chunk'])
    for (const isolation of ISOLATIONS) {
      const input = Buffer.from(randomText(30_000, 5).map((b) => (b === 0x21 ? 0x20 : b))) // no '!'
      assert.equal((await run(wasmTransform(bytes, { isolation, bufferSize: 1024 }), input, [777])).toString(), `bytes: ${input.length}\n`)
      await assert.rejects(run(wasmTransform(bytes, { isolation }), Buffer.from('hi!')), { code: 'ERR_WASM_GUEST_ERROR', status: 5, message: /count: no '!' please$/ })
    }
  })
})

// ---- AssemblyScript: examples/guests/assemblyscript, compiled here ---------------------------

/** grepn: the lines containing `pattern`, each after "<line number>:"; a last line without '\n' as it is. */
function grepnRef(input: Buffer, pattern = 'ERROR'): Buffer {
  const pat = Buffer.from(pattern)
  const parts: Buffer[] = []
  splitLines(input).forEach((line, i) => {
    const body = line[line.length - 1] === 0x0a ? line.subarray(0, -1) : line
    if (body.includes(pat)) parts.push(Buffer.from(`${i + 1}:`), line)
  })
  return Buffer.concat(parts)
}

describe('AssemblyScript guest (examples/guests/assemblyscript), compiled with asc', () => {
  let dir = ''
  let grepn = ''

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'wasm-sandbox-asc-'))
    grepn = join(dir, 'grepn.wasm')
    const asc = await import('assemblyscript/asc')
    // The README's flags without -O: binaryen's optimizer takes most of the time (seconds more
    // under load) and changes no behaviour tested here.
    const args = [example('guests/assemblyscript/assembly/index.ts'), '--runtime', 'stub', '--use', 'abort=', '--noAssert', '-o', grepn]
    const stderr = asc.createMemoryStream()
    const { error } = await asc.main(args, { stderr })
    assert.equal(error, null, `asc failed: ${error?.message}\n${stderr.toString()}`)
  })
  after(() => rmSync(dir, { recursive: true, force: true }))

  it('asc built an ABI v1 guest: no env.abort or other host import', () => {
    assert.deepEqual(shape(readFileSync(grepn)), {
      imports: ['sandbox.emit', 'sandbox.fail'],
      exports: ['alloc', 'init', 'memory', 'process_chunk'],
    })
  })

  for (const isolation of ISOLATIONS) {
    it(`with delimiter '\\n', matches the reference over random lines split at random points (${isolation})`, async () => {
      await fc.assert(
        fc.asyncProperty(splits.length, splits.seed, splits.sizes, splits.bufferSize, async (length, seed, sizes, bufferSize) => {
          const input = randomLines(length, seed)
          const output = await run(wasmTransform(grepn, { isolation, bufferSize, delimiter: '\n' }), input, sizes)
          assert.ok(output.equals(grepnRef(input)), `grepn differs (length ${length}, seed ${seed}, sizes ${sizes}, bufferSize ${bufferSize})`)
        }),
        { numRuns: RUNS[isolation] },
      )
    })

    it(`without the delimiter, a line cut across chunks fails with status 2 saying so (${isolation})`, async () => {
      const input = Buffer.from('ERROR one\n'.repeat(300)) // 3000 bytes: a 1024-byte chunk ends inside a line
      await assert.rejects(run(wasmTransform(grepn, { isolation, bufferSize: 1024 }), input), {
        code: 'ERR_WASM_GUEST_ERROR',
        status: 2,
        message: /grepn: a line was cut across two chunks: run with the delimiter option/,
      })
    })
  }
})
