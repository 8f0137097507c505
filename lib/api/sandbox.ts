import { Readable, pipeline } from 'readable-stream'
import { endAndCollect } from './collect.js'
import { createSandboxStream, type SandboxStream } from '../compose.js'
import type { LoadedGuest, ModuleSource } from '../guest/load.js'
import { errors } from '../errors.js'
import { rejectUnknown, resolveOptions, type ResolvedOptions, type SandboxOptions } from '../options.js'
import { defaultMaxWorkers, WorkerPool } from '../runners/worker-pool.js'

/** One guest, many streams: the module is read and compiled once. */
export class StreamProcessor {
  private readonly source: ModuleSource
  private readonly options: ResolvedOptions
  private readonly workers: WorkerPool

  /** @internal use `sandbox.createStreamProcessor(module)` */
  constructor(source: ModuleSource, options: ResolvedOptions, workers: WorkerPool) {
    this.source = source
    this.options = options
    this.workers = workers
  }

  /** A fresh duplex running its own instance of the guest. */
  stream(): SandboxStream {
    return createSandboxStream(this.source, this.options, this.workers)
  }

  /** Runs `input` through a fresh stream and yields the guest's output chunks. */
  processStream(input: AsyncIterable<Uint8Array | string> | Iterable<Uint8Array | string>): AsyncIterable<Buffer> {
    const duplex = this.stream()
    const source = Readable.from(input as AsyncIterable<Uint8Array>, { objectMode: false })
    // The duplex is read below; pipeline only drives the writing side and tears down on error.
    pipeline(source, duplex as never, (err: Error | null | undefined) => {
      if (err && !duplex.destroyed) duplex.destroy(err)
    })
    return duplex as AsyncIterable<Buffer>
  }
}

/**
 * Holds options shared by every processor and call made from it, and their worker threads: at
 * most `maxWorkers` at once, reused from one stream to the next (see WorkerPool).
 */
export class Sandbox {
  readonly options: ResolvedOptions
  /** @internal the sandbox's threads; `workers()` reports on them. */
  readonly pool: WorkerPool

  /** @internal use `createSandbox(options)` */
  constructor(options: ResolvedOptions) {
    this.options = options
    this.pool = new WorkerPool({ maxWorkers: options.maxWorkers ?? defaultMaxWorkers() })
  }

  createStreamProcessor(module: ModuleSource): StreamProcessor {
    return new StreamProcessor(module, this.options, this.pool)
  }

  /** Worker threads now: alive (busy or idle), idle (kept for reuse), and streams waiting for one. */
  workers(): { max: number; live: number; idle: number; waiting: number } {
    const pool = this.pool
    return { max: pool.maxWorkers, live: pool.size, idle: pool.idleCount, waiting: pool.waitingCount }
  }

  /** Ends the idle workers now rather than after their idle time (they never hold the process open). */
  close(): void {
    this.pool.close()
  }

  /**
   * One-shot: the whole input as one chunk through `process_chunk`, then `flush`; all output
   * concatenated. For inputs that fit in memory; use a stream for anything larger. It runs
   * through the same stages and runners as a stream, so every limit, isolation and failure
   * behaves the same; checkpoints and `delimiter` do not apply to a single chunk.
   */
  async call(module: ModuleSource | LoadedGuest, input: Uint8Array | string, options: { signal?: AbortSignal } = {}): Promise<Buffer> {
    if (typeof options !== 'object' || options === null) throw errors.invalidOption('call options must be an object: { signal }')
    // Limits and the rest are the sandbox's: a { timeout } here would be silently ignored.
    rejectUnknown('call option', options, CALL_OPTIONS)
    if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
      throw errors.invalidOption(`signal must be an AbortSignal, got ${typeof options.signal}`)
    }
    if (typeof input !== 'string' && !(input instanceof Uint8Array)) {
      throw errors.invalidOption(`input must be a string or a Uint8Array (a Buffer), got ${input === null ? 'null' : typeof input}`)
    }
    const bytes = typeof input === 'string' ? Buffer.from(input) : Buffer.from(input.buffer, input.byteOffset, input.byteLength)
    const bufferSize = Math.max(bytes.length, 1)
    const stream = createSandboxStream(module, {
      ...this.options,
      bufferSize,
      autoBufferSize: false,
      maxRecordSize: Math.max(this.options.maxRecordSize, bufferSize),
      delimiter: undefined,
      checkpoint: undefined,
      resumeFrom: undefined,
      backpressure: 'block',
      signal: options.signal ?? this.options.signal,
    }, this.pool)
    return endAndCollect(stream, bytes)
  }
}

const CALL_OPTIONS = new Set(['signal'])

export function createSandbox(options?: SandboxOptions): Sandbox {
  return new Sandbox(resolveOptions(options))
}
