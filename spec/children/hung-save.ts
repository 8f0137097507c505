/**
 * Run as a child process by checkpoint.test.ts: a stream whose checkpoint storage's save never
 * settles and holds nothing open, with the default checkpoint.saveTimeout (30 s). The end of the
 * stream waits on that save; the test passes only if this process still exits by itself at once
 * (the timer bounding the save must not hold it open).
 */
import { Readable, Writable, pipeline } from 'node:stream'
import { MemoryCheckpointStorage, wasmTransform, type Checkpoint } from '../../lib/index.js'
import { example } from '../helpers/reference.js'

class HungStorage extends MemoryCheckpointStorage {
  override save(_checkpoint: Checkpoint): Promise<void> {
    process.stdout.write('save called\n')
    return new Promise(() => {})
  }
}

const stream = wasmTransform(example('pass.wasm'), {
  isolation: 'inline',
  bufferSize: 1024,
  checkpoint: { storage: new HungStorage(), every: 1024 },
})
const sink = new Writable({
  write(_chunk, _enc, cb) {
    cb()
  },
})
pipeline(Readable.from([Buffer.alloc(16 * 1024, 'a')]), stream, sink, (err) => {
  process.stdout.write(`settled ${String((err as NodeJS.ErrnoException | undefined)?.code)}\n`)
})
