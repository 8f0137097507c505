/**
 * maxLatency with output still unread: a whole record that waited its maxLatency behind a backlog
 * must come out once the consumer reads on, without more input and without the input ending.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Chunker, wasmTransform } from '../lib/index.js'
import { example } from './helpers/reference.js'
import { delay } from './helpers/streams.js'

/** Resolves once `stream` has output something ending with `tail`; rejects after `ms`. */
function outputEndingWith(stream: NodeJS.ReadableStream, tail: string, ms: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = ''
    const onData = (d: Buffer): void => {
      out += d.toString()
      if (!out.endsWith(tail)) return
      clearTimeout(timer)
      resolve(out)
    }
    const timer = setTimeout(() => {
      stream.removeListener('data', onData)
      reject(new Error(`no ${JSON.stringify(tail)} within ${ms} ms; got ${out.length} bytes ending ${JSON.stringify(out.slice(-16))}`))
    }, ms)
    stream.on('data', onData)
  })
}

describe('maxLatency behind unread output', () => {
  it('Chunker: a record whose timer fired while a read was already asked for still comes out', async () => {
    // The first chunk (8 bytes) sits under the highWaterMark (64), so the stream has already
    // asked for more (_read) and will not ask again until something is pushed.
    const chunker = new Chunker({ bufferSize: 8, highWaterMark: 64, delimiter: '\n', maxLatency: 20 })
    try {
      chunker.write(Buffer.from('aaaaaaa\n'))
      await delay(5)
      chunker.write(Buffer.from('ping\n'))
      await delay(60) // the timer fires while 'aaaaaaa\n' is still unread
      assert.equal(await outputEndingWith(chunker, 'ping\n', 2000), 'aaaaaaa\nping\n')
    } finally {
      chunker.destroy()
    }
  })

  it('wasmTransform (inline): ping\\n written behind a backlog nobody has read yet is answered once it is read', async () => {
    const line = 'x'.repeat(99) + '\n'
    for (const lines of [1, 50, 134, 250]) {
      const stream = wasmTransform(example('upper.wasm'), { isolation: 'inline', delimiter: '\n', bufferSize: 4096 })
      try {
        for (let i = 0; i < lines; i++) stream.write(line)
        await delay(30)
        stream.write('ping\n')
        await delay(40) // its maxLatency (10 ms) passes with the backlog still unread
        const out = await outputEndingWith(stream, 'PING\n', 3000)
        assert.equal(out.length, lines * 100 + 5, `behind ${lines} lines`)
      } finally {
        stream.destroy()
      }
    }
  })
})
