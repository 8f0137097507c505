/**
 * What a caller writes stays the caller's: the stream never tags nor mutates it, so a producer
 * that writes one Buffer object over and over (a reused page) loses nothing, even across a
 * checkpoint and a resume.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { MemoryCheckpointStorage, offsetOf, wasmTransform, type Isolation, type SandboxOptions } from '../lib/index.js'
import { example, upperRef, wcRef } from './helpers/reference.js'
import { randomLines } from './helpers/streams.js'

const PAGE = 4096

/** Writes every buffer in `writes` (objects may repeat) without waiting, ends, returns the output. */
async function writeAll(options: SandboxOptions & { guest: string }, writes: readonly Buffer[]): Promise<Buffer> {
  const { guest, ...rest } = options
  const stream = wasmTransform(example(guest), rest)
  const out: Buffer[] = []
  stream.on('data', (d: Buffer) => out.push(d))
  const ended = new Promise<void>((resolve, reject) => {
    stream.on('end', resolve)
    stream.on('error', reject)
  })
  for (const w of writes) stream.write(w)
  stream.end()
  await ended
  return Buffer.concat(out)
}

for (const isolation of ['inline', 'worker'] as Isolation[]) {
  describe(`the caller's buffers (${isolation})`, () => {
    it('wc over one 4 KiB page written 8 times, resumed from the latest checkpoint, counts every byte once', async () => {
      // 1024 lines of "a b\n": 1024 lines, 2048 words, 4096 bytes a page.
      const page = Buffer.from('a b\n'.repeat(PAGE / 4))
      const expected = wcRef(Buffer.concat(Array(8).fill(page))).toString()
      assert.equal(expected, '8192 16384 32768\n')
      const storage = new MemoryCheckpointStorage()
      const whole = await writeAll({ guest: 'wc.wasm', isolation, bufferSize: PAGE, checkpoint: { storage, every: PAGE } }, Array(8).fill(page))
      assert.equal(whole.toString(), expected, 'the run itself')

      const checkpoint = (await storage.loadLatest())!
      assert.ok(checkpoint, 'a checkpoint was saved')
      assert.equal(checkpoint.inputOffset % PAGE, 0, 'a cut falls between chunks')
      // Resume as a crashed producer would: from the checkpoint's offset, with the same page.
      const left = 8 - checkpoint.inputOffset / PAGE
      const rest = await writeAll({ guest: 'wc.wasm', isolation, bufferSize: PAGE, resumeFrom: checkpoint }, Array(left).fill(page))
      const combined = Buffer.concat([whole.subarray(0, checkpoint.outputOffset), rest])
      assert.equal(combined.toString(), expected, `resumed from input offset ${checkpoint.inputOffset}`)
      assert.equal(offsetOf(page), undefined, "the caller's Buffer is not tagged")
    })

    it('upper (which rewrites its input in place, in guest memory) leaves every written Buffer as it was', async () => {
      for (const delimiter of [undefined, '\n']) {
        const input = randomLines(50_000, 4)
        const pieces: Buffer[] = []
        const sizes = [PAGE, 2 * PAGE, 100, PAGE + 1]
        for (let at = 0, i = 0; at < input.length; i++) {
          const size = sizes[i % sizes.length]!
          pieces.push(Buffer.from(input.subarray(at, at + size)))
          at += size
        }
        const copies = pieces.map((p) => Buffer.from(p))
        const out = await writeAll({ guest: 'upper.wasm', isolation, bufferSize: PAGE, ...(delimiter ? { delimiter } : {}) }, pieces)
        assert.ok(out.equals(upperRef(input)), 'the output is right')
        pieces.forEach((p, i) => {
          assert.ok(p.equals(copies[i]!), `piece ${i}: bytes unchanged`)
          assert.deepEqual(Object.getOwnPropertySymbols(p), [], `piece ${i}: nothing attached`)
        })
      }
    })
  })
}
