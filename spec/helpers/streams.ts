/** Small stream helpers shared by the tests: sources, sinks and a collector. */
import { Readable, Writable, type Duplex } from 'node:stream'
import { pipeline } from 'node:stream/promises'

/** A source that yields `input` cut at the given sizes (cycled), as distinct Buffers. */
export function sourceOf(input: Buffer, sizes: number[] = [input.length || 1]): Readable {
  let pos = 0
  let i = 0
  return new Readable({
    read() {
      if (pos >= input.length) {
        this.push(null)
        return
      }
      const size = Math.max(1, sizes[i++ % sizes.length]!)
      this.push(Buffer.from(input.subarray(pos, pos + size)))
      pos += size
    },
  })
}

/** A sink that keeps every chunk. */
export function collector(): Writable & { chunks: Buffer[]; result(): Buffer } {
  const chunks: Buffer[] = []
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk)
      cb()
    },
  }) as Writable & { chunks: Buffer[]; result(): Buffer }
  sink.chunks = chunks
  sink.result = () => Buffer.concat(chunks)
  return sink
}

/** Runs `input` (cut at `sizes`) through `duplex` and returns everything it output. */
export async function run(duplex: Duplex, input: Buffer, sizes?: number[]): Promise<Buffer> {
  const sink = collector()
  await pipeline(sourceOf(input, sizes), duplex, sink)
  return sink.result()
}

/** Deterministic pseudo-random bytes (xorshift), so failures reproduce. */
export function randomBytes(length: number, seed = 1): Buffer {
  const out = Buffer.allocUnsafe(length)
  let x = seed >>> 0 || 1
  for (let i = 0; i < length; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}

/** Random text lines (printable ASCII, some containing ERROR), total about `length` bytes. */
export function randomLines(length: number, seed = 1): Buffer {
  const raw = randomBytes(length, seed)
  const words = ['alpha', 'ERROR', 'beta', 'gamma', 'x', '', 'delta  ', 'Tab\there', 'error']
  const parts: string[] = []
  let size = 0
  for (let i = 0; size < length; i++) {
    const w = words[raw[i % raw.length]! % words.length]!
    const sep = raw[(i * 7) % raw.length]! % 5 === 0 ? '\n' : ' '
    parts.push(w + sep)
    size += w.length + 1
  }
  return Buffer.from(parts.join('').slice(0, length))
}

export function once<T = unknown>(emitter: NodeJS.EventEmitter, event: string): Promise<T> {
  return new Promise((resolve) => emitter.once(event, resolve as (v: unknown) => void))
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** A sink that takes a millisecond per write, as a slow file or terminal does; `received` counts bytes. */
export function slowSink(highWaterMark = 16 * 1024): Writable & { received: number } {
  const sink = new Writable({
    highWaterMark,
    write(chunk: Buffer, _encoding, callback) {
      sink.received += chunk.length
      setTimeout(callback, 1)
    },
  }) as Writable & { received: number }
  sink.received = 0
  return sink
}

/** `promise`, or a rejection naming `what` after `ms` instead of a test that hangs. */
export function within<T>(ms: number, promise: Promise<T>, what: string | (() => string)): Promise<T> {
  const hung = new Promise<never>((_, reject) =>
    setTimeout(() => reject(new Error(`${typeof what === 'function' ? what() : what}: hung`)), ms).unref(),
  )
  return Promise.race([promise, hung])
}
