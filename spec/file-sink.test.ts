/**
 * FileSink: writes that take fewer bytes than given go again, chunks buffered while a write is
 * in flight go out in one writev, and a write that takes nothing fails the stream.
 */
import assert from 'node:assert/strict'
import type { FileHandle } from 'node:fs/promises'
import { describe, it } from 'node:test'
import { FileSink } from '../lib/checkpoint/file-sink.js'

/** A file in memory whose writes take at most `most` bytes each, as a signal or a full disk may. */
function shortFile(most: number) {
  const bytes: number[] = []
  const calls = { write: 0, writev: 0 }
  const put = (data: Uint8Array, position: number): number => {
    const n = Math.min(most, data.length)
    for (let i = 0; i < n; i++) bytes[position + i] = data[i]!
    return n
  }
  const handle = {
    async write(buffer: Buffer, offset: number, length: number, position: number) {
      calls.write++
      return { bytesWritten: put(buffer.subarray(offset, offset + length), position), buffer }
    },
    async writev(buffers: Buffer[], position: number) {
      calls.writev++
      return { bytesWritten: put(Buffer.concat(buffers), position), buffers }
    },
    async sync() {},
  }
  return { handle: handle as unknown as FileHandle, calls, text: () => Buffer.from(bytes).toString() }
}

function finish(sink: FileSink): Promise<void> {
  return new Promise((resolve, reject) => {
    sink.on('error', reject)
    sink.on('finish', resolve)
  })
}

describe('FileSink', () => {
  it('writes every byte when each write takes only a few', async () => {
    const file = shortFile(3)
    const sink = new FileSink(file.handle, 0, 4)
    const done = finish(sink)
    for (const part of ['hello ', 'short ', 'writes', '!']) sink.write(Buffer.from(part))
    sink.end()
    await done
    assert.equal(file.text(), 'hello short writes!')
    assert.equal(sink.position, 19)
    assert.ok(file.calls.writev > 0, 'chunks buffered behind a write go out in one writev')
  })

  it('a write that takes nothing fails the stream instead of spinning', async () => {
    const file = shortFile(0)
    const sink = new FileSink(file.handle, 0)
    const done = finish(sink)
    sink.end(Buffer.from('lost'))
    await assert.rejects(done, /wrote nothing/)
  })
})
