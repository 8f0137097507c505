/**
 * Run as a child process by web-stream.test.ts: a guest that loops forever inside process_chunk
 * (after emitting "running"), stopped from the Web Streams side, then nothing else. The test
 * passes only if this process exits by itself: the guest's worker is gone.
 *   cancel: cancels the readable side;  abort: aborts the writable side.
 */
import { wasmTransformStream } from '../../lib/index.js'
import { fixture } from '../helpers/reference.js'

const mode = process.argv[2] ?? 'cancel'
const report = (what: Record<string, unknown>): void => void process.stdout.write(JSON.stringify(what) + '\n')

const ts = wasmTransformStream(fixture('loop-process.wasm'), { limits: { timeout: 600_000 } })
const writer = ts.writable.getWriter()
const reader = ts.readable.getReader()
writer.write(new TextEncoder().encode('input')).catch((err: Error) => report({ writeRejected: err.name }))
const first = await reader.read()
const running = new TextDecoder().decode(first.value)
if (mode === 'cancel') {
  await reader.cancel('enough')
  const closed = await writer.closed.then(
    () => 'closed',
    (reason: unknown) => String(reason),
  )
  report({ running, writableClosed: closed, duplexDestroyed: ts.duplex.destroyed })
} else {
  await writer.abort(new Error('stop'))
  const read = await reader.read().then(
    () => 'read',
    (err: Error) => err.message,
  )
  report({ running, readRejected: read, duplexDestroyed: ts.duplex.destroyed })
}
