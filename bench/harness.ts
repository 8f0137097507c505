/**
 * Bench plumbing: input pool, source, sink, timing, statistics. Knows nothing about wasm.
 */
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { Readable, Writable, type Stream } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'

/** The directory holding package.json, found by walking up from this file (src or build). */
export function repoRoot(from: string = import.meta.url): string {
  let dir = dirname(fileURLToPath(from))
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir
    const parent = dirname(dir)
    if (parent === dir) throw new Error(`no package.json above ${fileURLToPath(from)}`)
    dir = parent
  }
}

/**
 * Distinct prefilled buffers cycled through by every scenario: 64, or fewer (not under 16) so
 * the pool stays within 16 MiB and in L3 at every chunk size. Distinct so the guests see varied
 * text, not for safety: the stream never tags nor mutates what it is given, so the same object
 * may be in flight several times (as with any producer that reuses one buffer).
 */
function poolSize(chunkBytes: number): number {
  return Math.max(16, Math.min(64, Math.floor((16 * 1024 * 1024) / chunkBytes)))
}
/** How many leading output bytes are kept to check the transform did what it should. */
export const HEAD_BYTES = 64

/** What one timed run processes: `chunks` chunks of exactly `chunkBytes` bytes. */
export interface Input {
  readonly chunkBytes: number
  readonly chunks: number
  readonly pool: readonly Buffer[]
}

/** What one run produced, checked after every run. */
export interface Output {
  bytes: number
  /** Copy of the first HEAD_BYTES output bytes. */
  head: Buffer | undefined
}

const ALPHABET = Buffer.from('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.;:!?-\n', 'latin1')
const pools = new Map<number, Buffer[]>()

/** ASCII text, mixed case, deterministic (LCG), different in every buffer of the pool. */
function fillText(buf: Buffer, seed: number): void {
  let x = (seed * 2654435761 + 1) >>> 0
  for (let i = 0; i < buf.length; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0
    buf[i] = ALPHABET[(x >>> 24) % ALPHABET.length]!
  }
}

export function makeInput(chunkBytes: number, chunks: number): Input {
  let pool = pools.get(chunkBytes)
  if (!pool) {
    pool = []
    for (let i = 0, n = poolSize(chunkBytes); i < n; i++) {
      const buf = Buffer.allocUnsafeSlow(chunkBytes)
      fillText(buf, i)
      pool.push(buf)
    }
    pools.set(chunkBytes, pool)
  }
  return { chunkBytes, chunks, pool }
}

/**
 * Chunk `i` of the input. Every scenario, stream or bare, takes its chunks from here: one of the
 * pool's prefilled buffers itself (no copy, no fill, no view), handed out again every pool-size
 * chunks, the way a producer reusing its buffers would.
 */
export function chunkAt(input: Input, i: number): Buffer {
  return input.pool[i % input.pool.length]!
}

/** Pushes `input.chunks` chunks, as fast as the pipeline takes them. */
export function source(input: Input): Readable {
  let i = 0
  return new Readable({
    highWaterMark: input.chunkBytes,
    read() {
      while (i < input.chunks) {
        if (!this.push(chunkAt(input, i++))) return
      }
      this.push(null)
    },
  })
}

/** Discards everything, counting bytes and keeping the head for the correctness check. */
export class CountingSink extends Writable {
  readonly output: Output = { bytes: 0, head: undefined }

  constructor(highWaterMark: number) {
    super({ highWaterMark })
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const out = this.output
    if (out.head === undefined) out.head = Buffer.from(chunk.subarray(0, HEAD_BYTES))
    out.bytes += chunk.length
    callback()
  }
}

/** source → ...stages → sink, with `stream/promises` pipeline. */
export async function runPipeline(input: Input, stages: readonly Stream[]): Promise<Output> {
  const sink = new CountingSink(input.chunkBytes)
  const streams = [source(input), ...stages, sink] as unknown as readonly NodeJS.ReadWriteStream[]
  await pipeline(streams)
  return sink.output
}

export interface Timed {
  seconds: number
  output: Output
  /** Minor page faults during the run: fresh memory behind output buffers; the main source of noise. */
  pageFaults: number
}

export async function timed(run: () => Promise<Output>): Promise<Timed> {
  const faults = process.resourceUsage().minorPageFault
  const start = process.hrtime.bigint()
  const output = await run()
  const seconds = Number(process.hrtime.bigint() - start) / 1e9
  return { seconds, output, pageFaults: process.resourceUsage().minorPageFault - faults }
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** MB/s with MB = 1e6 bytes; numerically equal to bytes per microsecond. */
export function mbps(bytes: number, seconds: number): number {
  return bytes / seconds / 1e6
}

/** Microseconds one chunk takes at a throughput of `rate` MB/s. */
export function usPerChunk(chunkBytes: number, rate: number): number {
  return chunkBytes / rate
}

export function formatSize(bytes: number): string {
  if (bytes >= 1024 * 1024 && bytes % (1024 * 1024) === 0) return `${bytes / (1024 * 1024)} MiB`
  if (bytes >= 1024 && bytes % 1024 === 0) return `${bytes / 1024} KiB`
  return `${bytes} B`
}
