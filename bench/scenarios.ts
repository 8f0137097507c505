/**
 * What is measured. A scenario turns an Input into an Output; to add one (worker isolation,
 * checkpoints on/off, ...) add an entry to a list below, usually with `streamScenario`.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough, Transform, type Stream, type TransformCallback } from 'node:stream'
import { PassThrough as RsPassThrough } from 'readable-stream'
import {
  Chunker,
  FileCheckpointStorage,
  WasmExecutor,
  loadGuest,
  wasmTransform,
  type CheckpointOptions,
  type LoadedGuest,
  type SandboxStream,
  type Snapshot,
} from '../lib/index.js'
import { HEAD_BYTES, chunkAt, runPipeline, type Input, type Output } from './harness.js'

/**
 * What the output must be, checked after every run: `same` as the input, ASCII `upper`-cased,
 * `numbered` as the numberer guest does it ("1\tline\n2\t..."), or the one `wc` line.
 */
export type Expect = 'same' | 'upper' | 'numbered' | 'wc'

/** What one run of a checkpointing scenario did, read after the timed region. */
export interface CheckpointRun {
  /** `metrics().checkpointsSaved` at the end of the run. */
  saved: number
  /** Snapshots the executor took (a newer one supersedes one still waiting to be saved). */
  snapshots: number
  /** `storedBytes` of the checkpoints left in the directory (FileCheckpointStorage keeps the newest 3). */
  storedBytes: number[]
  /** Guest linear memory in the last snapshot, uncompressed. */
  memoryBytes: number | undefined
}

export interface Scenario {
  readonly name: string
  readonly expect: Expect
  /** Fraction of the normal bytes (or chunks) per run, for slow cells; default 1. See WORKER_CHUNKS. */
  readonly volumeScale?: number
  /** One-time setup outside the timed region (compiling a module, ...). */
  prepare?(): Promise<void>
  /** Per-run setup outside the timed region (a fresh checkpoint directory, ...). */
  beforeRun?(): Promise<void>
  run(input: Input): Promise<Output>
  /** Per-run teardown outside the timed region; a checkpointing scenario reports what it saved. */
  afterRun?(): Promise<CheckpointRun | undefined>
}

export interface Guests {
  pass: string
  upper: string
  /** upper one byte at a time (no SIMD): a guest whose work, not the sandbox, dominates a chunk. */
  upperScalar: string
  numberer: string
  wc: string
}

export function guestsIn(root: string): Guests {
  const at = (name: string): string => join(root, 'examples', `${name}.wasm`)
  return { pass: at('pass'), upper: at('upper'), upperScalar: at('upper-scalar'), numberer: at('numberer'), wc: at('wc') }
}

/** source → stages(chunkBytes) → sink. The stages are built inside the timed region. */
export function streamScenario(name: string, expect: Expect, stages: (chunkBytes: number) => Stream[]): Scenario {
  return { name, expect, run: (input) => runPipeline(input, stages(input.chunkBytes)) }
}

/** The guest instantiated with no library: its exports, and `emit` handing each output to `deliver`. */
interface BareGuest {
  view: Uint8Array
  region: number
  processChunk(ptr: number, len: number): number
}

function bareGuest(module: WebAssembly.Module, chunkBytes: number, deliver: (out: Buffer) => void): BareGuest {
  const guest: BareGuest = { view: new Uint8Array(0), region: 0, processChunk: (_ptr: number, _len: number): number => 0 }
  const emit = (ptr: number, len: number): void => {
    const out = Buffer.allocUnsafe(len)
    out.set(guest.view.subarray(ptr, ptr + len))
    deliver(out)
  }
  const instance = new WebAssembly.Instance(module, { sandbox: { emit, fail: () => {} } })
  const exports = instance.exports as {
    memory: WebAssembly.Memory
    alloc: (len: number) => number
    process_chunk: (ptr: number, len: number) => number
  }
  guest.region = exports.alloc(chunkBytes) >>> 0
  guest.view = new Uint8Array(exports.memory.buffer) // after alloc, which may grow memory
  guest.processChunk = exports.process_chunk
  return guest
}

/** A scenario run on the guest compiled once, before the timed runs. */
function compiledScenario(name: string, expect: Expect, wasmPath: string, run: (module: WebAssembly.Module, input: Input) => Promise<Output>): Scenario {
  let module: WebAssembly.Module | undefined
  return {
    name,
    expect,
    async prepare() {
      module ??= await WebAssembly.compile(await readFile(wasmPath))
    },
    run: (input) => run(module!, input),
  }
}

/**
 * The floor the library is measured against: the same wasm called in a plain loop, with the
 * same copies the library makes (Uint8Array.set into the alloc'd region; allocUnsafe + set out).
 */
export function bareScenario(name: string, expect: Expect, wasmPath: string): Scenario {
  return compiledScenario(name, expect, wasmPath, async (module, input) => {
    const output: Output = { bytes: 0, head: undefined }
    const { chunkBytes, chunks } = input
    const { view, region, processChunk } = bareGuest(module, chunkBytes, (out) => {
      if (output.head === undefined) output.head = Buffer.from(out.subarray(0, HEAD_BYTES))
      output.bytes += out.length
    })
    for (let i = 0; i < chunks; i++) {
      view.set(chunkAt(input, i), region)
      const status = processChunk(region, chunkBytes)
      if (status !== 0) throw new Error(`${name}: process_chunk returned ${status}`)
    }
    return output
  })
}

/**
 * The bare loop's calls inside one Node Transform, between the same source and sink as the
 * library: no library at all, so its ratio to the bare loop is what any one stream stage costs
 * over a plain loop on this machine, the floor under `wasmTransform`'s ratio.
 */
class BareTransform extends Transform {
  private readonly guest: BareGuest

  constructor(module: WebAssembly.Module, chunkBytes: number) {
    super({ highWaterMark: chunkBytes })
    this.guest = bareGuest(module, chunkBytes, (out) => this.push(out))
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    const { view, region, processChunk } = this.guest
    view.set(chunk, region)
    const status = processChunk(region, chunk.length)
    callback(status === 0 ? null : new Error(`process_chunk returned ${status}`))
  }
}

export function bareTransformScenario(name: string, expect: Expect, wasmPath: string): Scenario {
  return compiledScenario(name, expect, wasmPath, (module, input) => runPipeline(input, [new BareTransform(module, input.chunkBytes)]))
}

/** A JS Transform that copies every chunk: what any stage that touches the bytes costs at least. */
class CopyTransform extends Transform {
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    const out = Buffer.allocUnsafe(chunk.length)
    out.set(chunk)
    callback(null, out)
  }
}

const hwm = (n: number) => ({ highWaterMark: n })

/**
 * The worker-isolated per-chunk cells run this fraction of SMALL_CHUNKS per run: at ~20 µs per
 * 4 KiB chunk (10x inline) the full count would add ~18 s and take `npm run bench` towards
 * ~90 s on a 2-core machine. A run still takes ~1 s, so the worker's start-up (~20 ms per
 * stream, inside the timed region) stays ~2%. The worker throughput cells keep the full volume:
 * at half of it, start-up was ~14% of a 1 MiB-chunk run.
 */
export const WORKER_CHUNKS = 1 / 2

/**
 * `upper-scalar` runs at about 200 MB/s on text: at the full 2 GiB its six cells took 4 of
 * `npm run bench`'s minutes. An eighth of 1 GiB is about 0.6 s a run; its runs spread by 5-11 %.
 */
export const SCALAR_VOLUME = 1 / 8

/** The bare loop of `upper` inside one Transform: the floor of any stream (bareTransformScenario). */
export const BARE_IN_A_TRANSFORM = 'bare(upper) in one Transform'

/** Where the guest runs; `wasmTransform` defaults to `'worker'`, so every scenario says which. */
const inline = { isolation: 'inline' } as const
const worker = { isolation: 'worker' } as const

/** The main matrix: run at 16 KiB, 64 KiB, 1 MiB. */
export function throughputScenarios(guests: Guests): Scenario[] {
  return [
    streamScenario('wasmTransform(upper, inline)', 'upper', (n) => [wasmTransform(guests.upper, { bufferSize: n, ...inline })]),
    streamScenario('wasmTransform(pass, inline)', 'same', (n) => [wasmTransform(guests.pass, { bufferSize: n, ...inline })]),
    streamScenario('wasmTransform(upper, worker)', 'upper', (n) => [wasmTransform(guests.upper, { bufferSize: n, ...worker })]),
    streamScenario('wasmTransform(pass, worker)', 'same', (n) => [wasmTransform(guests.pass, { bufferSize: n, ...worker })]),
    { ...streamScenario('wasmTransform(upper-scalar, inline)', 'upper', (n) => [wasmTransform(guests.upperScalar, { bufferSize: n, ...inline })]), volumeScale: SCALAR_VOLUME },
    { ...streamScenario('wasmTransform(upper-scalar, worker)', 'upper', (n) => [wasmTransform(guests.upperScalar, { bufferSize: n, ...worker })]), volumeScale: SCALAR_VOLUME },
    bareScenario('bare(upper)', 'upper', guests.upper),
    bareScenario('bare(pass)', 'same', guests.pass),
    bareTransformScenario(BARE_IN_A_TRANSFORM, 'upper', guests.upper),
    streamScenario('js-copy', 'same', (n) => [new CopyTransform(hwm(n))]),
    streamScenario('passthrough', 'same', (n) => [new PassThrough(hwm(n))]),
  ]
}

const MiB = 1024 * 1024

/**
 * The checkpoint cells run this fraction of the normal volume (512 MiB instead of 2 GiB): the
 * numberer does real work per byte (two passes, a number per line: ~0.7-0.9 GB/s here, about
 * 0.3-0.5 GB/s with a checkpoint every MiB in a worker), so at full volume these 24 cells alone
 * would take `npm run bench` past 2 minutes. A run still takes 0.6-1.7 s.
 *
 * Consequence: a run is much shorter than the default checkpoint interval (5 s), so the
 * "default interval" cells save no checkpoint at all; they measure what having checkpoints on
 * costs between checkpoints (the CheckpointTap stage, the due-check per chunk). The cost of the
 * checkpoints themselves is measured by the "every 1 MiB" cells, and report.ts projects it onto
 * a 5 s interval.
 */
export const CHECKPOINT_VOLUME = 1 / 4
/** wc is there for its checkpoint size and cost ratio only: half that again (256 MiB per run). */
export const WC_VOLUME = 1 / 8
/** Input bytes between checkpoints in the "every" cells. */
export const CHECKPOINT_EVERY = 1 * MiB

export type CheckpointMode = 'off' | 'default' | 'every'

/** Scenario names, shared with report.ts (ratios, verdict, checkpoint table). */
export function checkpointScenarioName(guest: string, isolation: 'inline' | 'worker', mode: CheckpointMode): string {
  const base = `wasmTransform(${guest}, ${isolation})`
  if (mode === 'off') return base
  return mode === 'default' ? `${base} +ckpt 5 s (default)` : `${base} +ckpt every 1 MiB`
}

/**
 * `wasmTransform(guest)` with checkpoints `off`, at the `default` interval, or `every`
 * CHECKPOINT_EVERY input bytes (and the default interval), into a FileCheckpointStorage (fsync
 * on, as by default) in a fresh directory under os.tmpdir() per run, removed after the run.
 * Creating the directory, listing the checkpoints and removing them happen outside the timed
 * region; the 'off' cell goes through the same steps minus the directory.
 */
export function checkpointScenario(
  guest: string,
  wasmPath: string,
  expect: Expect,
  isolation: 'inline' | 'worker',
  mode: CheckpointMode,
  volumeScale: number = CHECKPOINT_VOLUME,
): Scenario {
  let dir: string | undefined
  let stream: SandboxStream | undefined
  let snapshots = 0
  let memoryBytes: number | undefined
  return {
    name: checkpointScenarioName(guest, isolation, mode),
    expect,
    volumeScale,
    async beforeRun() {
      if (mode !== 'off') dir = await mkdtemp(join(tmpdir(), 'wasm-sandbox-bench-'))
    },
    async run(input) {
      let checkpoint: CheckpointOptions | undefined
      if (dir !== undefined) {
        const storage = new FileCheckpointStorage(dir)
        checkpoint = mode === 'every' ? { storage, every: CHECKPOINT_EVERY } : { storage }
      }
      snapshots = 0
      memoryBytes = undefined
      stream = wasmTransform(wasmPath, { bufferSize: input.chunkBytes, isolation, ...(checkpoint ? { checkpoint } : {}) })
      const executor = stream.stages.find((s) => s instanceof WasmExecutor)
      executor?.on('snapshot', (snapshot: Snapshot) => {
        snapshots++
        memoryBytes = snapshot.state.memory.length
      })
      return runPipeline(input, [stream])
    },
    async afterRun() {
      const saved = stream?.metrics().checkpointsSaved ?? 0
      stream = undefined
      if (dir === undefined) return { saved, snapshots, storedBytes: [], memoryBytes }
      try {
        // The stream has ended but nothing prunes the directory at the end: the newest 3 are there.
        const infos = await new FileCheckpointStorage(dir).list()
        return { saved, snapshots, storedBytes: infos.map((i) => i.storedBytes ?? NaN), memoryBytes }
      } finally {
        await rm(dir, { recursive: true, force: true })
        dir = undefined
      }
    },
  }
}

/**
 * Checkpoint cost and size, at 16 KiB, 64 KiB, 1 MiB: the stateful numberer (text lines in,
 * numbered lines out) with checkpoints off / at the default interval / every 1 MiB, in a worker
 * and inline; and wc (state: four counters; output: one line at the end), off and every 1 MiB,
 * for its checkpoint size. See CHECKPOINT_VOLUME, WC_VOLUME.
 *
 * With `isolation: 'inline'` this bench's source never waits for I/O, so the event loop does not
 * get to complete a save (zlib and fsync finish on the thread pool) until the stream ends: those
 * cells save 1 checkpoint per run, whatever the interval, and their snapshots are superseded.
 * A source that yields to the loop (any file or socket) lets the saves through.
 */
export function checkpointScenarios(guests: Guests): Scenario[] {
  const out: Scenario[] = []
  for (const isolation of ['worker', 'inline'] as const) {
    for (const mode of ['off', 'default', 'every'] as const) {
      out.push(checkpointScenario('numberer', guests.numberer, 'numbered', isolation, mode))
    }
  }
  for (const mode of ['off', 'every'] as const) out.push(checkpointScenario('wc', guests.wc, 'wc', 'worker', mode, WC_VOLUME))
  return out
}

/**
 * Small chunks, where the bytes cost next to nothing and per-chunk machinery dominates: splits
 * wasmTransform's fixed cost into its layers (readable-stream, Chunker, WasmExecutor, bundle),
 * inline, and what the worker runner adds on top (executor alone, then the whole transform).
 * Names carry a `chunk:` prefix so --filter can select or skip them as a group.
 */
export function perChunkScenarios(guests: Guests): Scenario[] {
  let pass: LoadedGuest | undefined
  const rs = (s: unknown): Stream => s as Stream
  return [
    streamScenario('chunk:direct', 'same', () => []),
    streamScenario('chunk:passthrough', 'same', (n) => [new PassThrough(hwm(n))]),
    streamScenario('chunk:rs-passthrough', 'same', (n) => [rs(new RsPassThrough(hwm(n)))]),
    streamScenario('chunk:js-copy', 'same', (n) => [new CopyTransform(hwm(n))]),
    streamScenario('chunk:chunker', 'same', (n) => [rs(new Chunker({ bufferSize: n }))]),
    {
      ...streamScenario('chunk:executor(pass, inline)', 'same', (n) => [rs(new WasmExecutor(pass!, { bufferSize: n, ...inline }))]),
      async prepare() {
        pass ??= await loadGuest(guests.pass)
      },
    },
    {
      ...streamScenario('chunk:chunker+executor(pass, inline)', 'same', (n) => [
        rs(new Chunker({ bufferSize: n })),
        rs(new WasmExecutor(pass!, { bufferSize: n, ...inline })),
      ]),
      async prepare() {
        pass ??= await loadGuest(guests.pass)
      },
    },
    streamScenario('chunk:wasmTransform(pass, inline)', 'same', (n) => [wasmTransform(guests.pass, { bufferSize: n, ...inline })]),
    {
      ...streamScenario('chunk:executor(pass, worker)', 'same', (n) => [
        rs(new WasmExecutor(pass!, { bufferSize: n, ...worker })),
      ]),
      async prepare() {
        pass ??= await loadGuest(guests.pass)
      },
      volumeScale: WORKER_CHUNKS,
    },
    {
      ...streamScenario('chunk:wasmTransform(pass, worker)', 'same', (n) => [
        wasmTransform(guests.pass, { bufferSize: n, ...worker }),
      ]),
      volumeScale: WORKER_CHUNKS,
    },
    bareScenario('chunk:bare(pass)', 'same', guests.pass),
  ]
}

/** Per pool (so per chunk size): what the numberer and wc checks need from each buffer. */
interface BufferFacts {
  newlines: number
  /** Words starting in the buffer, counting one at its first byte if that is not whitespace. */
  wordStarts: number
  firstInWord: boolean
  lastInWord: boolean
  lastIsNewline: boolean
}
const facts = new WeakMap<readonly Buffer[], BufferFacts[]>()

/** wc's whitespace: space, \t, \n, \v, \f, \r. */
const isSpace = (c: number): boolean => c === 32 || (c >= 9 && c <= 13)

function factsOf(pool: readonly Buffer[]): BufferFacts[] {
  let f = facts.get(pool)
  if (f) return f
  f = pool.map((buf) => {
    let newlines = 0
    let wordStarts = 0
    let inWord = false
    for (let i = 0; i < buf.length; i++) {
      const c = buf[i]!
      if (c === 10) newlines++
      if (isSpace(c)) inWord = false
      else if (!inWord) {
        inWord = true
        wordStarts++
      }
    }
    return {
      newlines,
      wordStarts,
      firstInWord: buf.length > 0 && !isSpace(buf[0]!),
      lastInWord: inWord,
      lastIsNewline: buf[buf.length - 1] === 10,
    }
  })
  facts.set(pool, f)
  return f
}

/** Input totals over the run: lines ('\n'), words as wc counts them, whether the last byte is '\n'. */
function inputTotals(input: Input): { newlines: number; words: number; endsWithNewline: boolean } {
  const f = factsOf(input.pool)
  let newlines = 0
  let words = 0
  let inWord = false
  for (let i = 0; i < input.chunks; i++) {
    const b = f[i % f.length]!
    newlines += b.newlines
    words += b.wordStarts - (inWord && b.firstInWord ? 1 : 0)
    inWord = b.lastInWord
  }
  const last = f[(input.chunks - 1) % f.length]!
  return { newlines, words, endsWithNewline: last.lastIsNewline }
}

/** "1\t" before every line, as the numberer guest does, over `text`. */
function numbered(text: Buffer): Buffer {
  const parts: string[] = []
  let line = 0
  let mid = false
  for (const c of text.toString('latin1')) {
    if (!mid) {
      parts.push(`${++line}\t`)
      mid = true
    }
    parts.push(c)
    if (c === '\n') mid = false
  }
  return Buffer.from(parts.join(''), 'latin1')
}

/** Output bytes the numberer adds: "<n>\t" before each of `lines` lines. */
function numberingBytes(lines: number): number {
  let total = 0
  for (let digits = 1, lo = 1; lo <= lines; digits++, lo *= 10) {
    const hi = Math.min(lines, lo * 10 - 1)
    total += (hi - lo + 1) * (digits + 1)
  }
  return total
}

function expected(scenario: Scenario, input: Input): { bytes: number; head: Buffer } {
  const inBytes = input.chunkBytes * input.chunks
  const first = input.pool[0]!.subarray(0, HEAD_BYTES)
  switch (scenario.expect) {
    case 'same':
      return { bytes: inBytes, head: first }
    case 'upper':
      return { bytes: inBytes, head: Buffer.from(first.toString('latin1').toUpperCase(), 'latin1') }
    case 'numbered': {
      const { newlines, endsWithNewline } = inputTotals(input)
      const lines = newlines + (endsWithNewline ? 0 : 1)
      return { bytes: inBytes + numberingBytes(lines), head: numbered(first).subarray(0, HEAD_BYTES) }
    }
    case 'wc': {
      const { newlines, words } = inputTotals(input)
      const line = Buffer.from(`${newlines} ${words} ${inBytes}\n`, 'latin1')
      return { bytes: line.length, head: line.subarray(0, HEAD_BYTES) }
    }
  }
}

/** Throws unless `output` is what `scenario` should have produced from `input`. */
export function checkOutput(scenario: Scenario, input: Input, output: Output): void {
  const want = expected(scenario, input)
  if (output.bytes !== want.bytes) {
    throw new Error(`${scenario.name}: ${output.bytes} bytes out, expected ${want.bytes}`)
  }
  if (!output.head || !output.head.equals(want.head)) {
    throw new Error(`${scenario.name}: wrong output: ${JSON.stringify(output.head?.toString('latin1'))}`)
  }
}
