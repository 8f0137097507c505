/**
 * Run as a child process by destroy.test.ts: destroys a running sandbox stream mid-way and then
 * does nothing else. The test passes only if this process exits by itself (no open handle).
 */
import { Readable, Writable, pipeline } from 'node:stream'
import { wasmTransform, type Isolation } from '../../lib/index.js'
import { example } from '../helpers/reference.js'

const isolation = (process.argv[3] ?? 'worker') as Isolation
const stream = wasmTransform(example(process.argv[2] ?? 'upper.wasm'), { bufferSize: 1024, isolation })
let produced = 0
const source = new Readable({
  read() {
    produced++
    this.push(Buffer.alloc(1024, 'a'))
  },
})
let consumed = 0
const sink = new Writable({
  write(_chunk, _enc, cb) {
    if (++consumed === 50) stream.destroy()
    setTimeout(cb, 1)
  },
})
pipeline(source, stream, sink, (err) => {
  process.stdout.write(JSON.stringify({ err: (err as NodeJS.ErrnoException | undefined)?.code, produced, consumed }) + '\n')
})
