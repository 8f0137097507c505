/**
 * BatchedWriter (the CLI's `> file` output): chunks wait until a batch is full or the stream
 * ends, go out in one writev, a short write's rest goes again, and a failed write fails the
 * stream once.
 */
import assert from 'node:assert/strict'
import { closeSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { describe, it } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import { BatchedWriter, type WritevFunction } from '../lib/cli/batched-writer.js'
import { tempDir } from './helpers/temp.js'

/** A file in memory whose writes take at most `most` bytes each; records each call's size. */
function fakeFile(most = Infinity) {
  const parts: Buffer[] = []
  const calls: number[] = []
  const writev: WritevFunction = (_fd, buffers, callback) => {
    const all = Buffer.concat(buffers)
    const n = Math.min(most, all.length)
    calls.push(all.length)
    parts.push(all.subarray(0, n))
    setImmediate(callback, null, n)
  }
  return { writev, calls, bytes: () => Buffer.concat(parts) }
}

/** Writes that wait in `inFlight` until the test lets each one take all its bytes. */
function heldWrites() {
  const inFlight: Array<() => void> = []
  const writev: WritevFunction = (_fd, buffers, callback) => {
    inFlight.push(() => callback(null, Buffer.concat(buffers).length))
  }
  return { inFlight, writev }
}

const chunks = (count: number, size: number): Buffer[] => Array.from({ length: count }, (_, i) => Buffer.alloc(size, 97 + (i % 26)))

describe('BatchedWriter', () => {
  it('writes nothing until a batch is full, then the batch in one call; the rest at the end', async () => {
    const file = fakeFile()
    const writer = new BatchedWriter(9, 1000, 60_000, file.writev)
    for (const c of chunks(3, 300)) assert.equal(writer.write(c), true)
    await new Promise(setImmediate)
    assert.deepEqual(file.calls, [], 'below the batch size nothing is written')
    writer.write(Buffer.alloc(100, 122)) // exactly the batch size
    await new Promise(setImmediate)
    assert.deepEqual(file.calls, [1000])
    writer.end(Buffer.alloc(10, 33))
    await new Promise((resolve) => writer.on('finish', resolve))
    assert.deepEqual(file.calls, [1000, 10])
    assert.deepEqual(file.bytes(), Buffer.concat([...chunks(3, 300), Buffer.alloc(100, 122), Buffer.alloc(10, 33)]))
  })

  it('writes the rest of a short write again, in order', async () => {
    const file = fakeFile(700)
    const input = chunks(20, 333)
    await pipeline(Readable.from(input), new BatchedWriter(9, 1000, 60_000, file.writev))
    assert.deepEqual(file.bytes(), Buffer.concat(input))
    assert.ok(file.calls.every((n, i) => i === file.calls.length - 1 || n <= 1332), `calls ${file.calls.join(',')}`)
  })

  it('writes a batch that is not full once maxDelayMs has passed, and keeps the order with the writes after it', async () => {
    const file = fakeFile()
    const inFlight: Array<() => void> = []
    const slow: WritevFunction = (fd, buffers, callback) => {
      inFlight.push(() => file.writev(fd, buffers, callback))
    }
    const writer = new BatchedWriter(9, 1000, 20, slow)
    writer.write(Buffer.from('first '))
    await delay(5)
    assert.equal(inFlight.length, 0, 'not before the delay')
    await delay(40)
    assert.equal(inFlight.length, 1, 'written once the delay has passed')
    // While that write is in flight, more comes and fills a batch: it waits its turn.
    const done = new Promise<void>((resolve) => writer.end(Buffer.alloc(1000, 98), () => resolve()))
    await delay(5)
    assert.equal(inFlight.length, 1, 'one write at a time')
    inFlight.shift()!()
    while (inFlight.length === 0) await delay(1)
    inFlight.shift()!()
    await done
    assert.deepEqual(file.bytes(), Buffer.concat([Buffer.from('first '), Buffer.alloc(1000, 98)]))
  })

  it('destroyed under a write, calls back every write once: the one in flight and the one waiting behind it', async () => {
    const { inFlight, writev } = heldWrites()
    const writer = new BatchedWriter(9, 100, 60_000, writev)
    writer.on('error', () => {})
    const calledBack: Array<Error | null | undefined> = []
    writer.write(Buffer.alloc(100), (err) => calledBack.push(err)) // fills a batch: written now
    writer.write(Buffer.alloc(100), (err) => calledBack.push(err)) // waits for the first
    await new Promise(setImmediate)
    assert.equal(inFlight.length, 1)
    writer.destroy()
    inFlight.shift()!()
    await new Promise((resolve) => writer.on('close', resolve))
    await new Promise(setImmediate)
    assert.equal(calledBack.length, 2, 'each write called back once')
    assert.ok(!calledBack[0], 'the write that went out succeeded')
    assert.equal((calledBack[1] as NodeJS.ErrnoException).code, 'ERR_STREAM_DESTROYED')
    assert.equal(inFlight.length, 0, 'nothing written after the destroy')
  })

  it('destroyed while a write waits behind a timed flush, calls that write back, destroyed', async () => {
    const { inFlight, writev } = heldWrites()
    const writer = new BatchedWriter(9, 1000, 5, writev)
    writer.on('error', () => {})
    writer.write(Buffer.alloc(10))
    while (inFlight.length === 0) await delay(2) // the timed flush is out
    const calledBack: Array<Error | null | undefined> = []
    writer.write(Buffer.alloc(10), (err) => calledBack.push(err)) // held behind it
    await new Promise(setImmediate)
    writer.destroy()
    inFlight.shift()!()
    await new Promise((resolve) => writer.on('close', resolve))
    await new Promise(setImmediate)
    assert.equal(calledBack.length, 1)
    assert.equal((calledBack[0] as NodeJS.ErrnoException).code, 'ERR_STREAM_DESTROYED')
    assert.equal(inFlight.length, 0, 'nothing written after the destroy')
  })

  it('copies small chunks together: a batch of 8-byte outputs is a few buffers, not thousands', async () => {
    const buffersPerCall: number[] = []
    const file = fakeFile()
    const writev: WritevFunction = (fd, buffers, callback) => {
      buffersPerCall.push(buffers.length)
      file.writev(fd, buffers, callback)
    }
    const input = Array.from({ length: 20_000 }, (_, i) => Buffer.from(`line${String(i).padStart(3, '0')}\n`.slice(-8)))
    await pipeline(Readable.from(input), new BatchedWriter(9, 100_000, 60_000, writev))
    assert.deepEqual(file.bytes(), Buffer.concat(input))
    assert.ok(buffersPerCall.every((n) => n <= 3), `buffers per write: ${buffersPerCall.join(',')}`)
  })

  it('a timed write that fails calls back the write waiting behind it, destroyed', async () => {
    const inFlight: Array<() => void> = []
    const writev: WritevFunction = (_fd, _buffers, callback) => {
      inFlight.push(() => callback(Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' }), 0))
    }
    const writer = new BatchedWriter(9, 1000, 5, writev)
    const errors: string[] = []
    writer.on('error', (err: NodeJS.ErrnoException) => errors.push(err.code!))
    writer.write(Buffer.alloc(10))
    while (inFlight.length === 0) await delay(2) // the timed write is out
    const calledBack: Array<Error | null | undefined> = []
    writer.write(Buffer.alloc(10), (err) => calledBack.push(err)) // waits behind it
    await new Promise(setImmediate)
    inFlight.shift()!()
    await new Promise((resolve) => writer.on('close', resolve))
    await new Promise(setImmediate)
    assert.deepEqual(errors, ['EIO'])
    assert.equal(calledBack.length, 1, 'the waiting write is called back')
    assert.ok(calledBack[0], 'with an error')
  })

  it('empty chunks are no output, not a write that took nothing', async () => {
    const file = fakeFile()
    const writer = new BatchedWriter(9, 100, 60_000, file.writev)
    writer.write(Buffer.alloc(0))
    await new Promise<void>((resolve, reject) => {
      writer.on('error', reject)
      writer.end(() => resolve())
    })
    assert.deepEqual(file.calls, [])
  })

  it('an empty stream writes nothing', async () => {
    const file = fakeFile()
    await pipeline(Readable.from([]), new BatchedWriter(9, 1000, 60_000, file.writev))
    assert.deepEqual(file.calls, [])
  })

  it('a write that fails, or takes nothing, fails the stream once with that error', async () => {
    for (const outcome of [Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' }), 0] as const) {
      const writev: WritevFunction = (_fd, _buffers, callback) => setImmediate(() => (outcome === 0 ? callback(null, 0) : callback(outcome, 0)))
      const writer = new BatchedWriter(9, 100, 60_000, writev)
      let errors = 0
      writer.on('error', () => errors++)
      await assert.rejects(pipeline(Readable.from(chunks(5, 60)), writer), outcome === 0 ? /wrote nothing/ : /EIO/)
      await new Promise(setImmediate)
      assert.equal(errors, 1)
    }
  })

  it('destroyed under a write, closes only once that write returns, and writes no more', async () => {
    let finishWrite: (() => void) | undefined
    const calls: number[] = []
    const writev: WritevFunction = (_fd, buffers, callback) => {
      const n = Buffer.concat(buffers).length
      calls.push(n)
      finishWrite = () => callback(null, Math.min(n, 100)) // a short write: the rest would go again
    }
    const writer = new BatchedWriter(9, 200, 60_000, writev)
    writer.write(Buffer.alloc(300))
    await new Promise(setImmediate)
    assert.deepEqual(calls, [300])
    let closed = 0
    writer.on('close', () => closed++)
    writer.on('error', () => {})
    writer.destroy(new Error('stop'))
    await new Promise(setImmediate)
    assert.equal(closed, 0, "'close' must wait for the write in flight")
    finishWrite!()
    await new Promise(setImmediate)
    assert.equal(closed, 1)
    assert.deepEqual(calls, [300], 'nothing written after the destroy')
  })

  it('appends at the descriptor\'s own offset, as `>>` asks', async (t) => {
    const path = join(tempDir(t, 'batched-writer-'), 'out.txt')
    writeFileSync(path, 'before\n')
    const fd = openSync(path, 'a')
    try {
      const input = chunks(50, 1000)
      await pipeline(Readable.from(input), new BatchedWriter(fd, 4096, 10))
      assert.deepEqual(readFileSync(path), Buffer.concat([Buffer.from('before\n'), ...input]))
    } finally {
      closeSync(fd)
    }
  })

  it('writes at the descriptor\'s own offset when it is not at 0 and not in append mode (`{ echo head; run; } > out`)', async (t) => {
    const path = join(tempDir(t, 'batched-writer-'), 'out.txt')
    const fd = openSync(path, 'w')
    try {
      writeSync(fd, 'before\n')
      const input = chunks(50, 1000)
      await pipeline(Readable.from(input), new BatchedWriter(fd, 4096, 10))
      assert.deepEqual(readFileSync(path), Buffer.concat([Buffer.from('before\n'), ...input]))
    } finally {
      closeSync(fd)
    }
  })
})
