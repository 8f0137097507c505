import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Readable, Writable, type Duplex } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { WasmExecutor, wasmTransform, type SandboxStream } from '../lib/index.js'
import { defaultMaxInFlight } from '../lib/options.js'
import { example, fixture } from './helpers/reference.js'

function buffered(stream: SandboxStream): number {
  const executor = stream.stages.find((s) => s instanceof WasmExecutor) as WasmExecutor
  let bytes = stream.readableLength + stream.writableLength + executor.queuedBytes
  for (const stage of stream.stages) bytes += (stage as Duplex).readableLength + (stage as Duplex).writableLength
  return bytes
}

for (const isolation of ['inline', 'worker'] as const)
describe(`backpressure (${isolation})`, () => {
  it('a guest emitting 1,000 outputs per chunk into a slow consumer keeps buffered bytes bounded', async () => {
    const chunkSize = 256
    const hwm = 1024
    // Two chunks in flight (the default would queue 1 MiB of these 256-byte chunks).
    const stream = wasmTransform(fixture('emit-many.wasm'), { bufferSize: chunkSize, highWaterMark: hwm, isolation, flowControl: { maxInFlight: 2 } })
    let produced = 0
    const source = new Readable({
      highWaterMark: hwm,
      read() {
        if (produced === 100) this.push(null)
        else {
          produced++
          this.push(Buffer.alloc(chunkSize, produced))
        }
      },
    })
    let written = 0
    let maxBuffered = 0
    let maxAhead = 0
    const sink = new Writable({
      highWaterMark: hwm,
      write(chunk: Buffer, _enc, cb) {
        written += chunk.length
        maxBuffered = Math.max(maxBuffered, buffered(stream))
        // How far the source ran ahead of what the consumer has taken, in input chunks.
        maxAhead = Math.max(maxAhead, produced - Math.floor(written / (1000 * chunkSize)))
        if (written % (100 * chunkSize) === 0) setTimeout(cb, 1)
        else setImmediate(cb)
      },
    })
    await pipeline(source, stream, sink)
    assert.equal(written, 100 * 1000 * chunkSize)
    // Inline, one chunk's output is produced in one synchronous call, so the bound is one
    // chunk's output plus a highWaterMark for each of the six stream buffers (the bundle's and
    // each stage's readable and writable sides), not the whole stream's 25 MiB. In a worker the
    // guest blocks in emit while the output ring is full, so a chunk's output never piles up:
    // the bound is the six buffers and one ring-drain's worth (the ring holds 2 chunks).
    const bound = isolation === 'inline' ? 1000 * chunkSize + 6 * hwm : 6 * hwm + 2 * chunkSize
    assert.ok(maxBuffered <= bound, `buffered ${maxBuffered} bytes (bound ${bound})`)
    // Input waits in the source, the bundle's writable side, the chunker and the executor's
    // writable side (a highWaterMark each), plus the chunk being processed: not 100 chunks.
    assert.ok(maxAhead * chunkSize <= 5 * hwm + 2 * chunkSize, `the source ran ${maxAhead} chunks ahead of the consumer`)
  })

  it('the source pauses while a slow consumer catches up (native backpressure end to end)', async () => {
    const hwm = 4096
    const stream = wasmTransform(example('pass.wasm'), { bufferSize: 1024, highWaterMark: hwm, isolation })
    const inFlight = defaultMaxInFlight(1024) * 1024
    let produced = 0
    let consumed = 0
    let maxAhead = 0
    const source = new Readable({
      highWaterMark: hwm,
      read() {
        if (produced >= 1024 * 1024) this.push(null)
        else {
          produced += 1024
          this.push(Buffer.alloc(1024))
        }
      },
    })
    const sink = new Writable({
      highWaterMark: hwm,
      write(chunk: Buffer, _enc, cb) {
        consumed += chunk.length
        maxAhead = Math.max(maxAhead, produced - consumed)
        setImmediate(cb)
      },
    })
    await pipeline(source, stream, sink)
    assert.equal(consumed, 1024 * 1024)
    // A highWaterMark for each buffer on the way, and in a worker the chunks in flight to it.
    assert.ok(maxAhead <= 10 * hwm + (isolation === 'worker' ? inFlight : 0), `source ran ${maxAhead} bytes ahead`)
  })
})
