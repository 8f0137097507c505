/**
 * Web Streams over the sandbox: `{ readable, writable }` for `pipeThrough`, `fetch` bodies and
 * any other WHATWG streams code. A thin layer on `wasmTransform`: same options, limits and typed
 * errors; nothing in the library below the API imports it.
 */
// The global Web Streams, not node:stream/web's: in a program that also loads TypeScript's DOM
// library the globals are the DOM's types, and fetch bodies (DOM types) pipe through this only
// if it is typed with those same ones.
import { wasmTransform } from '../api/wasm-transform.js'
import type { SandboxStream, StreamMetrics } from '../compose.js'
import type { ModuleSource } from '../guest/load.js'
import type { SandboxOptions } from '../options.js'

/**
 * A `TransformStream<Uint8Array, Uint8Array>` in all but name: write bytes to `writable`, read
 * the guest's output from `readable`. Cancelling `readable` or aborting `writable` terminates the
 * guest; a guest failure errors both sides with the `WasmSandboxError`.
 */
export class WasmTransformStream {
  readonly readable: ReadableStream<Uint8Array>
  readonly writable: WritableStream<Uint8Array>
  /** The Node duplex underneath, for its events (`'chunk-error'`, `'checkpoint'`, `'drop'`, `'stderr'`, `'log'`). */
  readonly duplex: SandboxStream

  constructor(module: ModuleSource, options?: SandboxOptions) {
    const duplex = wasmTransform(module, options)
    this.duplex = duplex
    const sides = new Sides(duplex)
    this.readable = readableSide(duplex, sides)
    this.writable = writableSide(duplex, sides)
  }

  /** The stream's counters, as `SandboxStream.metrics()`. */
  metrics(): StreamMetrics {
    return this.duplex.metrics()
  }
}

/** `new WasmTransformStream(module, options)`, as a function beside `wasmTransform`. */
export function wasmTransformStream(module: ModuleSource, options?: SandboxOptions): WasmTransformStream {
  return new WasmTransformStream(module, options)
}

/**
 * The two controllers and the duplex's outcome. A TransformStream errors both of its sides
 * together, whichever side the failure came from; this does the same for the pair.
 */
class Sides {
  readable: ReadableStreamDefaultController<Uint8Array> | undefined
  writable: WritableStreamDefaultController | undefined
  /** Why the duplex stopped, once it has: its error, or the reason a side was cancelled with. */
  failure: unknown
  failed = false
  /** The output ended ('end'; the bundle's readable-stream 3 has no `readableEnded`). */
  private ended = false

  constructor(private readonly duplex: SandboxStream) {
    duplex.on('error', (err: Error) => this.fail(err))
    duplex.once('end', () => (this.ended = true))
    duplex.on('close', () => {
      // Destroyed without an error (by its owner): neither side may wait for it forever.
      if (!this.failed && !this.ended) this.fail(prematureClose())
    })
  }

  /** Errors both sides with `reason` (ignored by a side already closed or errored). */
  fail(reason: unknown): void {
    if (this.failed) return
    this.failed = true
    this.failure = reason
    this.readable?.error(reason)
    this.writable?.error(reason)
  }

  /** One side was cancelled or aborted: the other side errors with its reason, the guest ends. */
  stop(reason: unknown): void {
    this.fail(reason)
    if (!this.duplex.destroyed) this.duplex.destroy(asError(reason))
  }
}

function readableSide(duplex: SandboxStream, sides: Sides): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>(
    {
      start(controller) {
        sides.readable = controller
        // Paused before 'data' is listened to: the consumer's reads (pull) set the pace.
        duplex.pause()
        duplex.on('data', (chunk: Buffer) => {
          if (sides.failed) return
          controller.enqueue(ownBytes(chunk))
          if ((controller.desiredSize ?? 0) <= 0) duplex.pause()
        })
        duplex.on('end', () => {
          if (!sides.failed) controller.close()
        })
      },
      pull() {
        duplex.resume()
      },
      cancel(reason) {
        sides.stop(reason ?? cancelled('readable side was cancelled'))
      },
    },
    // Nothing queued ahead of the consumer's reads: the duplex's own buffer is the only one.
    { highWaterMark: 0 },
  )
}

function writableSide(duplex: SandboxStream, sides: Sides): WritableStream<Uint8Array> {
  return new WritableStream<Uint8Array>(
    {
      start(controller) {
        sides.writable = controller
        // abort() waits for a write in flight to settle, and one waiting for 'drain' never would:
        // the signal fires at once, so the guest ends and that write fails, and abort settles.
        // (Not within the signal's dispatch: the stream is mid-way into erroring there.)
        const { signal } = controller as WritableStreamDefaultController & { readonly signal: AbortSignal }
        signal.addEventListener('abort', () => queueMicrotask(() => sides.stop(signal.reason ?? cancelled('writable side was aborted'))), { once: true })
      },
      write(chunk) {
        const bytes = toBuffer(chunk)
        if (bytes === undefined) {
          const err = new TypeError(`wasmTransformStream takes Uint8Array (or any ArrayBufferView or ArrayBuffer) chunks, got ${describe(chunk)}`)
          sides.stop(err)
          return Promise.reject(err)
        }
        if (sides.failed) return Promise.reject(sides.failure)
        // An empty chunk carries nothing; the stages never see zero-length input.
        if (bytes.length === 0 || duplex.write(bytes)) return Promise.resolve()
        return settled(duplex, 'drain', sides)
      },
      close() {
        if (sides.failed) return Promise.reject(sides.failure)
        duplex.end()
        return settled(duplex, 'finish', sides)
      },
      abort(reason) {
        sides.stop(reason ?? cancelled('writable side was aborted'))
      },
    },
    // Bytes, like the duplex's own writable buffer, so writer.desiredSize means what it says.
    { highWaterMark: duplex.writableHighWaterMark, size: (chunk) => (chunk as ArrayBufferView | undefined)?.byteLength ?? 0 },
  )
}

/** Resolves on `event`; rejects if the duplex fails first. Listeners are removed either way. */
function settled(duplex: SandboxStream, event: 'drain' | 'finish', sides: Sides): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (): void => {
      duplex.removeListener(event, done)
      duplex.removeListener('close', closed)
      duplex.removeListener('error', closed)
      if (sides.failed) reject(sides.failure)
      else resolve()
    }
    // 'error' and 'close' reach the Sides listener first (registered earlier), so failure is set.
    const closed = done
    duplex.on(event, done)
    duplex.on('close', closed)
    duplex.on('error', closed)
  })
}

/**
 * The consumer gets memory of its own. A Buffer sharing Node's allocation pool would give it the
 * whole pool's ArrayBuffer (which it may transfer or detach): those are copied.
 */
function ownBytes(chunk: Buffer): Uint8Array {
  if (chunk.byteOffset === 0 && chunk.byteLength === chunk.buffer.byteLength) return new Uint8Array(chunk.buffer, 0, chunk.byteLength)
  return new Uint8Array(chunk)
}

/** A view over the chunk's bytes (no copy), or undefined for anything that is not bytes. */
function toBuffer(chunk: unknown): Buffer | undefined {
  if (ArrayBuffer.isView(chunk)) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
  if (chunk instanceof ArrayBuffer) return Buffer.from(chunk)
  return undefined
}

function describe(value: unknown): string {
  if (value === null) return 'null'
  if (typeof value === 'object') return (value as object).constructor?.name ?? 'an object'
  return typeof value
}

function asError(reason: unknown): Error {
  return reason instanceof Error ? reason : cancelled(`stream was cancelled: ${String(reason)}`)
}

/** Web Streams' own word for a stream its user stopped. */
function cancelled(what: string): Error {
  return new DOMException(`wasmTransformStream: the ${what}`, 'AbortError')
}

function prematureClose(): Error {
  return Object.assign(new Error('wasmTransformStream: the sandbox stream was destroyed before it ended'), {
    code: 'ERR_STREAM_PREMATURE_CLOSE',
  })
}
