import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { describe, it } from 'node:test'
import {
  FileCheckpointStorage,
  MemoryCheckpointStorage,
  wasmTransform,
  type CheckpointInfo,
  type Isolation,
  type SandboxOptions,
} from '../lib/index.js'
import { counterGlobalRef, example, numbererRef, readExample, wcRef } from './helpers/reference.js'
import { randomLines, run } from './helpers/streams.js'

const BUFFER = 4096

for (const isolation of ['inline', 'worker'] as Isolation[]) {
  describe(`checkpoints and resumeFrom (${isolation})`, () => {
    for (const [guest, ref] of [
      ['numberer', numbererRef],
      ['wc', wcRef],
      ['counter-global', (b: Buffer) => counterGlobalRef(chunkLengths(b.length))],
    ] as const) {
      it(`${guest}: output up to a checkpoint plus a run resumed from it equals one uninterrupted run`, async () => {
        const input = randomLines(300_000, 21)
        const storage = new MemoryCheckpointStorage({ keep: 2 })
        const options: SandboxOptions = { isolation, bufferSize: BUFFER, checkpoint: { storage, every: 32 * 1024 } }
        // A first run that stops part-way (as a crash would): it only gets the first 200 KB.
        const first = wasmTransform(example(`${guest}.wasm`), options)
        const seen: CheckpointInfo[] = []
        first.on('checkpoint', (info: CheckpointInfo) => seen.push(info))
        const firstOut = await run(first, input.subarray(0, 200_000))
        // Saves run off the data path; a snapshot taken while one is saving supersedes the one
        // waiting, so a fast stream saves fewer than it cut: at least one, numbered in order.
        assert.ok(seen.length >= 1, `checkpoints were saved (${seen.length})`)
        assert.deepEqual(seen.map((c) => c.sequence), seen.map((_, i) => i + 1))
        assert.equal(first.metrics().checkpointsSaved, seen.length)
        assert.equal(first.metrics().lastCheckpoint?.inputOffset, seen.at(-1)!.inputOffset)

        const checkpoint = (await storage.loadLatest())!
        assert.equal(checkpoint.inputOffset % BUFFER, 0, 'a cut falls between chunks')
        assert.ok(checkpoint.inputOffset > 0)
        const resumed = wasmTransform(example(`${guest}.wasm`), { isolation, bufferSize: BUFFER, resumeFrom: checkpoint })
        const rest = await run(resumed, input.subarray(checkpoint.inputOffset), [1000])
        const combined = Buffer.concat([firstOut.subarray(0, checkpoint.outputOffset), rest])
        assert.ok(combined.equals(ref(input)), 'resumed output differs')
        assert.equal(resumed.metrics().bytesIn, input.length, 'offsets continue from the checkpoint')
      })
    }

    it('a checkpoint taken with other output-changing options is refused', async () => {
      const storage = new MemoryCheckpointStorage()
      await run(wasmTransform(example('numberer.wasm'), { isolation, bufferSize: BUFFER, checkpoint: { storage, every: 8192 } }), randomLines(50_000))
      const checkpoint = (await storage.loadLatest())!
      assert.throws(() => wasmTransform(example('numberer.wasm'), { isolation, bufferSize: 2 * BUFFER, resumeFrom: checkpoint }), {
        code: 'ERR_WASM_CHECKPOINT_MISMATCH',
      })
      await assert.rejects(run(wasmTransform(example('wc.wasm'), { isolation, bufferSize: BUFFER, resumeFrom: checkpoint }), Buffer.from('x')), {
        code: 'ERR_WASM_CHECKPOINT_MISMATCH',
      })
    })
  })
}

describe('checkpoint limits', () => {
  it('a precompiled module cannot be checkpointed, and says so', async () => {
    const module = await WebAssembly.compile(readExample('numberer.wasm'))
    const storage = new MemoryCheckpointStorage()
    await assert.rejects(run(wasmTransform(module, { checkpoint: { storage, every: 1024 } }), Buffer.from('x\n')), {
      code: 'ERR_WASM_CHECKPOINT_UNSUPPORTED',
    })
  })

  it('a failing storage fails the stream with ERR_WASM_CHECKPOINT_FAILED', async () => {
    const storage = new MemoryCheckpointStorage()
    storage.save = async () => {
      throw new Error('disk full')
    }
    await assert.rejects(run(wasmTransform(example('pass.wasm'), { bufferSize: 1024, checkpoint: { storage, every: 1024 } }), randomLines(10_000)), (err: Error & { code: string }) => {
      assert.equal(err.code, 'ERR_WASM_CHECKPOINT_FAILED')
      assert.match(err.message, /disk full/)
      return true
    })
  })

  it('memory stays flat: 1 GiB through with checkpoints on grows RSS by under 64 MiB', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'wasm-sandbox-rss-'))
    try {
      const chunk = Buffer.alloc(64 * 1024, 'abcdefgh\n')
      let sent = 0
      const total = 1024 * 1024 * 1024
      const source = new Readable({
        read() {
          if (sent >= total) this.push(null)
          else {
            sent += chunk.length
            this.push(chunk)
          }
        },
      })
      const before = process.memoryUsage().rss
      let peak = before
      let writes = 0
      const sink = new Writable({
        write(_c: Buffer, _enc, cb) {
          if (++writes % 256 === 0) peak = Math.max(peak, process.memoryUsage().rss)
          cb()
        },
      })
      const stream = wasmTransform(example('numberer.wasm'), {
        checkpoint: { storage: new FileCheckpointStorage(dir), every: 16 * 1024 * 1024 },
      })
      await pipeline(source, stream, sink)
      const growth = (peak - before) / 1024 / 1024
      t.diagnostic(`RSS grew by ${growth.toFixed(1)} MiB over 1 GiB; ${stream.metrics().checkpointsSaved} checkpoints`)
      assert.ok(stream.metrics().checkpointsSaved >= 32)
      assert.ok(growth < 64, `RSS grew by ${growth} MiB`)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

function chunkLengths(length: number): number[] {
  const lengths: number[] = []
  for (let at = 0; at < length; at += BUFFER) lengths.push(Math.min(BUFFER, length - at))
  return lengths
}
