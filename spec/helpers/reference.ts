/**
 * Plain-JS reference implementations of the bundled example guests (examples/*.wat), used by the
 * tests to check guest output byte for byte, plus path helpers for examples/ and spec/fixtures/.
 */
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const NL = 0x0a

/**
 * The repository root: the nearest ancestor of this file that holds package.json and
 * spec/fixtures/. Works from spec/helpers/ (source) and build/spec/helpers/ (compiled) alike.
 */
export const repoRoot: string = (() => {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'spec', 'fixtures'))) return dir
    const parent = dirname(dir)
    if (parent === dir) throw new Error(`cannot find the repository root above ${fileURLToPath(import.meta.url)}`)
    dir = parent
  }
})()

/** Absolute path of a file in spec/fixtures/, e.g. fixture('emit-oob.wasm'). */
export const fixture = (name: string): string => join(repoRoot, 'spec', 'fixtures', name)

/** Absolute path of a file in examples/, e.g. example('upper.wasm'). */
export const example = (name: string): string => join(repoRoot, 'examples', name)

/** Bytes of a file in spec/fixtures/. */
export const readFixture = (name: string): Buffer => readFileSync(fixture(name))

/** Bytes of a file in examples/. */
export const readExample = (name: string): Buffer => readFileSync(example(name))

/** examples/pass.wasm: the input unchanged. */
export function passRef(input: Buffer): Buffer {
  return Buffer.from(input)
}

/** examples/upper.wasm: ASCII a-z -> A-Z, every other byte unchanged. */
export function upperRef(input: Buffer): Buffer {
  const out = Buffer.from(input)
  for (let i = 0; i < out.length; i++) {
    const c = out[i]!
    if (c >= 0x61 && c <= 0x7a) out[i] = c - 0x20
  }
  return out
}

/**
 * Splits into lines, each keeping its trailing '\n'; a last line without '\n' is kept as is.
 * Empty input gives no lines.
 */
export function splitLines(input: Buffer): Buffer[] {
  const lines: Buffer[] = []
  let start = 0
  while (start < input.length) {
    const nl = input.indexOf(NL, start)
    const end = nl === -1 ? input.length : nl + 1
    lines.push(input.subarray(start, end))
    start = end
  }
  return lines
}

/**
 * examples/grep.wasm (pattern "ERROR") or a `--grep-pattern` build: the concatenation of the lines
 * that contain `pattern`, each with its '\n' (the last line also when it has none). An empty
 * pattern matches every line.
 */
export function grepRef(input: Buffer, pattern: string | Buffer = 'ERROR'): Buffer {
  const pat = typeof pattern === 'string' ? Buffer.from(pattern, 'utf8') : pattern
  const kept = splitLines(input).filter((line) => {
    const body = line[line.length - 1] === NL ? line.subarray(0, line.length - 1) : line
    return body.includes(pat)
  })
  return Buffer.concat(kept)
}

/** The per-line outputs of grep (one emit each), for tests that look at emit boundaries. */
export function grepLinesRef(input: Buffer, pattern: string | Buffer = 'ERROR'): Buffer[] {
  const pat = typeof pattern === 'string' ? Buffer.from(pattern, 'utf8') : pattern
  return splitLines(input).filter((line) => {
    const body = line[line.length - 1] === NL ? line.subarray(0, line.length - 1) : line
    return body.includes(pat)
  })
}

const isWs = (c: number): boolean => c === 0x20 || (c >= 0x09 && c <= 0x0d)

/** examples/wc.wasm: "<lines> <words> <bytes>\n" over the whole input. */
export function wcRef(input: Buffer): Buffer {
  let lines = 0
  let words = 0
  let inWord = false
  for (const c of input) {
    if (c === NL) lines++
    const ws = isWs(c)
    if (!ws && !inWord) words++
    inWord = !ws
  }
  return Buffer.from(`${lines} ${words} ${input.length}\n`)
}

/** examples/numberer.wasm: every line prefixed with "<n>\t" (1-based), like `cat -n` unpadded. */
export function numbererRef(input: Buffer): Buffer {
  const parts: Buffer[] = []
  splitLines(input).forEach((line, i) => {
    parts.push(Buffer.from(`${i + 1}\t`), line)
  })
  return Buffer.concat(parts)
}

/** examples/counter-global.wasm: after each chunk, the running byte total as "<n>\n". */
export function counterGlobalRef(chunkLengths: readonly number[]): Buffer {
  let total = 0
  return Buffer.from(chunkLengths.map((n) => `${(total += n)}\n`).join(''))
}

/** Cuts `input` into chunks of `size` bytes (the last may be shorter); [] for empty input. */
export function chunksOf(input: Buffer, size: number): Buffer[] {
  if (size < 1) throw new RangeError('size must be >= 1')
  const out: Buffer[] = []
  for (let i = 0; i < input.length; i += size) out.push(input.subarray(i, i + size))
  return out
}
