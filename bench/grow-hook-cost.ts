/**
 * `node build/bench/grow-hook-cost.js [--runs N] [--cold]` (after `npm run build:spec`)
 *
 * What loading a guest costs: `loadGuest` (read, parse, the load-time rewrites, compile) for
 * examples/upper.wasm, the largest C guest (examples/guests/c-wasi/wordfreq.wasm) and a big
 * module made of wordfreq's function bodies repeated to about 1 MB of code, each with its own
 * memory limit so the compile cache never answers. Then, on its own, the memory.grow hook's
 * rewrite (lib/guest/grow-hook.ts) per MB of code section, against `WebAssembly.compile` of the
 * same module. `--cold`: also one `loadGuest` per fresh process, as a CLI run pays it (the
 * decoder then runs before the JIT has warmed up). Medians of N runs (default 15), with the
 * spread (min-max); the machine's load average is printed, since a shared machine makes these
 * noisy.
 */
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { encodeU32, Reader } from '../lib/guest/binary.js'
import { loadGuest } from '../lib/index.js'
import { median, repoRoot } from './harness.js'

const { values } = parseArgs({ options: { runs: { type: 'string', default: '15' }, cold: { type: 'boolean', default: false }, one: { type: 'string' } } })
const RUNS = Number(values.runs)
const root = repoRoot()

if (values.one !== undefined) {
  // One cold load in this fresh process (--cold spawns these): what a CLI run or a first stream pays.
  const t = performance.now()
  await loadGuest(values.one, { memoryLimit: 64 * 1024 * 1024 })
  console.log(performance.now() - t)
  process.exit(0)
}

const leb = encodeU32

function readLeb(bytes: Uint8Array, at: number): [value: number, next: number] {
  const reader = new Reader(bytes, at, bytes.length, 'the module')
  return [reader.u32('a LEB128 u32'), reader.pos]
}

/**
 * `times` copies of every function of `bytes` (its function and code sections repeated), the
 * other sections as they are and custom sections dropped. Valid as the original is: a copy
 * calls the same indices, which all still exist.
 */
function repeatFunctions(bytes: Uint8Array, times: number): Uint8Array {
  const out: number[] = [...bytes.subarray(0, 8)]
  for (let at = 8; at < bytes.length; ) {
    const id = bytes[at]!
    const [size, payload] = readLeb(bytes, at + 1)
    const end = payload + size
    if (id === 3 || id === 10) {
      const [count, entries] = readLeb(bytes, payload)
      const body: number[] = [...leb(count * times)]
      for (let i = 0; i < times; i++) for (let j = entries; j < end; j++) body.push(bytes[j]!)
      out.push(id, ...leb(body.length))
      for (const b of body) out.push(b)
    } else if (id !== 0) {
      for (let j = at; j < end; j++) out.push(bytes[j]!)
    }
    at = end
  }
  return Uint8Array.from(out)
}

function codeSectionSize(bytes: Uint8Array): number {
  for (let at = 8; at < bytes.length; ) {
    const [size, payload] = readLeb(bytes, at + 1)
    if (bytes[at] === 10) return size
    at = payload + size
  }
  return 0
}

interface Stat {
  median: number
  min: number
  max: number
}

async function measure(fn: (i: number) => unknown): Promise<Stat> {
  await fn(-1) // warm-up
  const ms: number[] = []
  for (let i = 0; i < RUNS; i++) {
    const t = performance.now()
    await fn(i)
    ms.push(performance.now() - t)
  }
  return { median: median(ms), min: Math.min(...ms), max: Math.max(...ms) }
}

const fmt = (s: Stat): string => `${s.median.toFixed(2)} ms (${s.min.toFixed(2)}-${s.max.toFixed(2)})`

const wordfreq = readFileSync(join(root, 'examples/guests/c-wasi/wordfreq.wasm'))
const big = repeatFunctions(wordfreq, Math.ceil(1_000_000 / codeSectionSize(wordfreq)))
const dir = mkdtempSync(join(tmpdir(), 'wasm-sandbox-load-'))
const bigPath = join(dir, 'wordfreq-repeated.wasm')
writeFileSync(bigPath, big)

console.log(`node ${process.version}, ${RUNS} runs each (median, min-max), load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`)
console.log('loadGuest (read, parse, rewrites, compile), a fresh memory limit each run so nothing is cached:')
const PAGE = 65536
let limit = 4096
for (const [name, path] of [
  ['examples/upper.wasm', join(root, 'examples/upper.wasm')],
  ['examples/guests/c-wasi/wordfreq.wasm', join(root, 'examples/guests/c-wasi/wordfreq.wasm')],
  [`wordfreq repeated (${(big.length / 1e6).toFixed(2)} MB)`, bigPath],
] as const) {
  const stat = await measure(() => loadGuest(path, { memoryLimit: limit++ * PAGE }))
  console.log(`  ${name.padEnd(44)} ${fmt(stat)}`)
}

if (values.cold) {
  console.log(`cold loadGuest, one per fresh process (${RUNS} processes each):`)
  for (const [name, path] of [
    ['examples/upper.wasm', join(root, 'examples/upper.wasm')],
    ['examples/guests/c-wasi/wordfreq.wasm', join(root, 'examples/guests/c-wasi/wordfreq.wasm')],
    [`wordfreq repeated (${(big.length / 1e6).toFixed(2)} MB)`, bigPath],
  ] as const) {
    const ms: number[] = []
    for (let i = 0; i < RUNS; i++) {
      const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--one', path], { encoding: 'utf8' })
      ms.push(Number(r.stdout.trim()))
    }
    console.log(`  ${name.padEnd(44)} ${fmt({ median: median(ms), min: Math.min(...ms), max: Math.max(...ms) })}`)
  }
}

// Imported by path so this file also builds on a tree without the hook (to compare with it).
const hookPath = '../lib/guest/grow-hook.js'
const hook = (await import(hookPath).catch(() => undefined)) as
  | { hookMemoryGrow(bytes: Uint8Array): { kind: string } }
  | undefined
if (hook) {
  const code = codeSectionSize(big)
  const rewrite = await measure(() => hook.hookMemoryGrow(big))
  const compile = await measure(() => WebAssembly.compile(big))
  console.log(`memory.grow hook rewrite of the repeated module (code section ${(code / 1e6).toFixed(2)} MB):`)
  console.log(`  rewrite ${fmt(rewrite)}: ${(code / 1e6 / (rewrite.median / 1000)).toFixed(0)} MB/s, ${(rewrite.median / (code / 1e6)).toFixed(2)} ms per MB of code`)
  console.log(`  WebAssembly.compile of the same module ${fmt(compile)}`)
  for (const [name, path] of [
    ['examples/upper.wasm', join(root, 'examples/upper.wasm')],
    ['examples/guests/c-wasi/wordfreq.wasm', join(root, 'examples/guests/c-wasi/wordfreq.wasm')],
  ] as const) {
    const bytes = readFileSync(path)
    console.log(`  rewrite of ${name.padEnd(37)} ${fmt(await measure(() => hook.hookMemoryGrow(bytes)))}`)
  }
}
console.log(`load average at the end ${loadavg().map((l) => l.toFixed(1)).join(' ')}`)
rmSync(dir, { recursive: true, force: true })
