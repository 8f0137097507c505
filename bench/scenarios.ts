/**
 * What is measured. A scenario turns an Input into an Output; to add one (worker isolation,
 * checkpoints on/off, ...) add an entry to a list below, usually with `streamScenario`.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { PassThrough, Transform, type Stream, type TransformCallback } from 'node:stream'
import { PassThrough as RsPassThrough } from 'readable-stream'
import { Chunker, WasmExecutor, loadGuest, wasmTransform, type LoadedGuest } from '../lib/index.js'
import { HEAD_BYTES, chunkAt, runPipeline, type Input, type Output } from './harness.js'

/** What the output must be, checked after every run: `same` as the input, or ASCII `upper`-cased. */
export type Expect = 'same' | 'upper'

export interface Scenario {
  readonly name: string
  readonly expect: Expect
  /** Fraction of the normal bytes (or chunks) per run, for slow cells; default 1. See WORKER_CHUNKS. */
  readonly volumeScale?: number
  /** One-time setup outside the timed region (compiling a module, ...). */
  prepare?(): Promise<void>
  run(input: Input): Promise<Output>
}

export interface Guests {
  pass: string
  upper: string
}

export function guestsIn(root: string): Guests {
  return { pass: join(root, 'examples', 'pass.wasm'), upper: join(root, 'examples', 'upper.wasm') }
}

/** source → stages(chunkBytes) → sink. The stages are built inside the timed region. */
export function streamScenario(name: string, expect: Expect, stages: (chunkBytes: number) => Stream[]): Scenario {
  return { name, expect, run: (input) => runPipeline(input, stages(input.chunkBytes)) }
}

/**
 * The floor the library is measured against: the same wasm called in a plain loop, with the
 * same copies the library makes (Uint8Array.set into the alloc'd region; allocUnsafe + set out).
 */
export function bareScenario(name: string, expect: Expect, wasmPath: string): Scenario {
  let module: WebAssembly.Module | undefined
  return {
    name,
    expect,
    async prepare() {
      module ??= await WebAssembly.compile(await readFile(wasmPath))
    },
    async run(input) {
      const output: Output = { bytes: 0, head: undefined }
      let view = new Uint8Array(0)
      const emit = (ptr: number, len: number): void => {
        const out = Buffer.allocUnsafe(len)
        out.set(view.subarray(ptr, ptr + len))
        if (output.head === undefined) output.head = Buffer.from(out.subarray(0, HEAD_BYTES))
        output.bytes += len
      }
      const instance = new WebAssembly.Instance(module!, { sandbox: { emit, fail: () => {} } })
      const exports = instance.exports as {
        memory: WebAssembly.Memory
        alloc: (len: number) => number
        process_chunk: (ptr: number, len: number) => number
      }
      const { chunkBytes, chunks } = input
      const region = exports.alloc(chunkBytes) >>> 0
      view = new Uint8Array(exports.memory.buffer) // after alloc, which may grow memory
      const processChunk = exports.process_chunk
      for (let i = 0; i < chunks; i++) {
        view.set(chunkAt(input, i), region)
        const status = processChunk(region, chunkBytes)
        if (status !== 0) throw new Error(`${name}: process_chunk returned ${status}`)
      }
      return output
    },
  }
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
    bareScenario('bare(upper)', 'upper', guests.upper),
    bareScenario('bare(pass)', 'same', guests.pass),
    streamScenario('js-copy', 'same', (n) => [new CopyTransform(hwm(n))]),
    streamScenario('passthrough', 'same', (n) => [new PassThrough(hwm(n))]),
  ]
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

/** Throws unless `output` is what `scenario` should have produced from `input`. */
export function checkOutput(scenario: Scenario, input: Input, output: Output): void {
  const expectedBytes = input.chunkBytes * input.chunks
  if (output.bytes !== expectedBytes) {
    throw new Error(`${scenario.name}: ${output.bytes} bytes out, expected ${expectedBytes}`)
  }
  const first = input.pool[0]!.subarray(0, HEAD_BYTES)
  const want = scenario.expect === 'upper' ? Buffer.from(first.toString('latin1').toUpperCase(), 'latin1') : first
  if (!output.head || !output.head.equals(want)) {
    throw new Error(`${scenario.name}: wrong output: ${JSON.stringify(output.head?.toString('latin1'))}`)
  }
}
