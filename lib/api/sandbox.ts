import { Readable, pipeline } from 'readable-stream'
import { createSandboxStream, type SandboxStream } from '../compose.js'
import { isLoadedGuest, loadGuest, type LoadedGuest, type ModuleSource } from '../guest/load.js'
import { errors } from '../errors.js'
import { resolveOptions, type ResolvedOptions, type SandboxOptions } from '../options.js'
import { runnerFor } from '../runners/select.js'

/** One guest, many streams: the module is read and compiled once. */
export class StreamProcessor {
  private readonly source: ModuleSource
  private readonly options: ResolvedOptions

  /** @internal use `sandbox.createStreamProcessor(module)` */
  constructor(source: ModuleSource, options: ResolvedOptions) {
    this.source = source
    this.options = options
  }

  /** A fresh duplex running its own instance of the guest. */
  stream(): SandboxStream {
    return createSandboxStream(this.source, this.options)
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

/** Holds options shared by every processor and call made from it. */
export class Sandbox {
  readonly options: ResolvedOptions

  /** @internal use `createSandbox(options)` */
  constructor(options: ResolvedOptions) {
    this.options = options
  }

  createStreamProcessor(module: ModuleSource): StreamProcessor {
    return new StreamProcessor(module, this.options)
  }

  /**
   * One-shot: the whole input as one chunk through `process_chunk`, then `flush`; all output
   * concatenated. For inputs that fit in memory; use a stream for anything larger.
   */
  async call(module: ModuleSource | LoadedGuest, input: Uint8Array | string): Promise<Buffer> {
    const { limits, isolation } = this.options
    const guest = isLoadedGuest(module) ? module : await loadGuest(module, { memoryLimit: limits.memory })
    const bytes = typeof input === 'string' ? Buffer.from(input) : Buffer.from(input.buffer, input.byteOffset, input.byteLength)
    const outputs: Buffer[] = []
    // A chunk failure is reported through hooks.failed, whichever step is waiting at the time.
    let fail: (err: Error) => void = () => {}
    const failed = new Promise<never>((_, reject) => {
      fail = reject
    })
    failed.catch(() => {})
    const runner = runnerFor(isolation)(
      guest,
      { output: (chunk) => outputs.push(chunk) > 0, done: () => {}, failed: (err) => fail(err) },
      {
        bufferSize: Math.max(bytes.length, 1),
        limits: { maxOutputPerChunk: limits.maxOutputPerChunk, maxOutput: limits.maxOutput, memory: limits.memory },
        timeout: limits.timeout,
        maxInFlight: 1,
      },
    )
    const step = (run: (cb: (err?: Error | null) => void) => void): Promise<void> =>
      Promise.race([new Promise<void>((resolve, reject) => run((err) => (err ? reject(err) : resolve()))), failed])
    let deadline: NodeJS.Timeout | undefined
    if (limits.deadline !== undefined) {
      deadline = setTimeout(() => {
        runner.destroy()
        fail(errors.timeout({ module: guest.name, exportName: 'process_chunk', offset: 0 }, limits.deadline!, 'deadline'))
      }, limits.deadline)
    }
    try {
      await step((cb) => runner.start(cb))
      await step((cb) => runner.process(bytes, 0, cb))
      await step((cb) => runner.flush(bytes.length, cb))
    } finally {
      clearTimeout(deadline)
      runner.destroy()
    }
    return Buffer.concat(outputs)
  }
}

export function createSandbox(options?: SandboxOptions): Sandbox {
  return new Sandbox(resolveOptions(options))
}
