/**
 * Runs one case: the module through a stream made with the case's options, the input written in
 * its pieces (with its pauses), the output read by a sink that is sometimes slow. The outcome is
 * output, a typed error, or anything else (which the soak counts as a defect).
 */
import { createHash } from 'node:crypto'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { createSandboxStream, MemoryCheckpointStorage, resolveOptions, WasmSandboxError, type SandboxOptions, type WorkerPool } from '../lib/index.js'
import type { CaseOptions, CaseSpec } from './cases.js'

export type Outcome =
  | { kind: 'ok'; bytes: number; sha256: string; chunkErrors: number }
  | { kind: 'typed'; code: string; message: string }
  | { kind: 'untyped'; name: string; message: string; stack: string }

function sandboxOptions(options: CaseOptions): SandboxOptions {
  const { checkpoint, ...rest } = options
  return {
    ...rest,
    ...(checkpoint && { checkpoint: { ...checkpoint, storage: new MemoryCheckpointStorage() } as NonNullable<SandboxOptions['checkpoint']> }),
  }
}

async function* pieces(spec: CaseSpec): AsyncGenerator<Buffer> {
  let at = 0
  for (let i = 0; i < spec.pieces.length; i++) {
    const pause = spec.pauses[i] ?? 0
    if (pause === -1) await new Promise((resolve) => setImmediate(resolve))
    else if (pause > 0) await sleep(pause)
    // A copy per piece: the stream may keep a view of what it is given.
    yield Buffer.from(spec.input.subarray(at, at + spec.pieces[i]!))
    at += spec.pieces[i]!
  }
}

export async function runCase(spec: CaseSpec, pool: WorkerPool): Promise<Outcome> {
  const hash = createHash('sha256')
  let bytes = 0
  let chunkErrors = 0
  let reads = 0
  try {
    const stream = createSandboxStream(Buffer.from(spec.module), resolveOptions(sandboxOptions(spec.options)), pool)
    stream.on('chunk-error', () => chunkErrors++)
    const sink = new Writable({
      highWaterMark: 1024,
      write(chunk: Buffer, _enc, callback) {
        bytes += chunk.length
        hash.update(chunk)
        const delay = spec.readerDelays[reads++ % spec.readerDelays.length]!
        if (delay > 0) setTimeout(callback, delay)
        else callback()
      },
    })
    await pipeline(Readable.from(pieces(spec), { objectMode: false }), stream, sink)
    return { kind: 'ok', bytes, sha256: hash.digest('hex'), chunkErrors }
  } catch (err) {
    if (err instanceof WasmSandboxError) return { kind: 'typed', code: err.code, message: err.message }
    const e = err as Error
    return { kind: 'untyped', name: e?.name ?? typeof err, message: e?.message ?? String(err), stack: e?.stack ?? String(err) }
  }
}
