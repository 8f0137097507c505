import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { describe, it, type TestContext } from 'node:test'
import {
  CheckpointTap,
  FileCheckpointStorage,
  MemoryCheckpointStorage,
  processFile,
  wasmTransform,
  type Checkpoint,
  type CheckpointInfo,
  type Isolation,
  type SandboxOptions,
} from '../lib/index.js'
import { runChild } from './helpers/child.js'
import { counterGlobalRef, example, numbererRef, readExample, wcRef } from './helpers/reference.js'
import { collector, delay, randomLines, run, sourceOf } from './helpers/streams.js'
import { tempDir } from './helpers/temp.js'

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
    const dir = tempDir(t, 'wasm-sandbox-rss-')
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
  })
})

/**
 * A storage whose save never settles, as one waiting on a server that never answers: its
 * pending request (here a timer) keeps the process alive, until the test ends.
 */
class HungStorage extends MemoryCheckpointStorage {
  saves = 0
  readonly #pending: NodeJS.Timeout[] = []
  constructor(t: TestContext) {
    super()
    t.after(() => this.#pending.forEach(clearInterval))
  }
  override save(_checkpoint: Checkpoint): Promise<void> {
    this.saves++
    this.#pending.push(setInterval(() => {}, 1000))
    return new Promise(() => {})
  }
}

/** Each save takes `ms`. */
class SlowStorage extends MemoryCheckpointStorage {
  constructor(private readonly ms: number) {
    super()
  }
  override async save(checkpoint: Checkpoint): Promise<void> {
    await delay(this.ms)
    await super.save(checkpoint)
  }
}

describe('checkpoint.saveTimeout', () => {
  for (const isolation of ['inline', 'worker'] as Isolation[]) {
    it(`a save that never settles fails the stream once, after saveTimeout, naming the storage and the timeout (${isolation})`, { timeout: 20_000 }, async (t) => {
      const storage = new HungStorage(t)
      const stream = wasmTransform(example('pass.wasm'), { isolation, bufferSize: 1024, checkpoint: { storage, every: 1024, saveTimeout: 300 } })
      const seen = { error: 0, end: 0, close: 0 }
      stream.on('error', () => seen.error++)
      stream.on('end', () => seen.end++)
      stream.on('close', () => seen.close++)
      const started = performance.now()
      // All the input goes by at once: it is the end of the stream that waits on the save.
      const err = await run(stream, randomLines(64 * 1024)).then(
        () => assert.fail('the stream ended although its checkpoint was never saved'),
        (e: Error & { code?: string }) => e,
      )
      const waited = performance.now() - started
      await delay(50)
      assert.equal(err.code, 'ERR_WASM_CHECKPOINT_FAILED', err.stack)
      assert.match(err.message, /^Saving the checkpoint at input offset \d+ to HungStorage took longer than checkpoint\.saveTimeout \(300 ms\); the stream was stopped\. .*raise checkpoint\.saveTimeout/)
      assert.ok(waited >= 290, `failed after ${waited} ms, before saveTimeout`)
      assert.deepEqual(seen, { error: 1, end: 0, close: 1 })
      assert.equal(storage.saves, 1, 'no save is started after the stream failed')
    })
  }

  it('bounds each save, not the stream: many saves under it in a stream far longer than it succeed', { timeout: 20_000 }, async () => {
    const input = randomLines(256 * 1024)
    const sink = new Writable({
      highWaterMark: 1024,
      write(_chunk: Buffer, _enc, cb) {
        setTimeout(cb, 2)
      },
    })
    const stream = wasmTransform(example('pass.wasm'), {
      bufferSize: 1024,
      highWaterMark: 1024,
      checkpoint: { storage: new SlowStorage(10), every: 1024, saveTimeout: 150 },
    })
    const started = performance.now()
    await pipeline(sourceOf(input, [1024]), stream, sink)
    const took = performance.now() - started
    assert.ok(took > 600, `the stream took ${took} ms, not several saveTimeouts`)
    assert.ok(stream.metrics().checkpointsSaved >= 5, `${stream.metrics().checkpointsSaved} checkpoints saved`)
  })

  it('is checked like the other time limits: a positive number of ms up to 2^31 - 1, or Infinity', async () => {
    for (const bad of [0, -1, Number.NaN, '1000', 2 ** 31]) {
      const storage = new MemoryCheckpointStorage()
      assert.throws(() => wasmTransform(example('pass.wasm'), { checkpoint: { storage, saveTimeout: bad as number } }), { code: 'ERR_WASM_INVALID_OPTION', message: /checkpoint\.saveTimeout/ }, String(bad))
      assert.throws(() => new CheckpointTap({ storage, optionsHash: '', saveTimeout: bad as number }), { code: 'ERR_WASM_INVALID_OPTION', message: /checkpoint\.saveTimeout/ }, String(bad))
    }
    assert.throws(() => wasmTransform(example('pass.wasm'), { checkpoint: { storage: new MemoryCheckpointStorage(), saveTimout: 10 } as never }), {
      code: 'ERR_WASM_INVALID_OPTION',
      message: /Unknown checkpoint option: saveTimout\. Known ones are .*saveTimeout/,
    })
    const sink = collector()
    await pipeline(sourceOf(randomLines(8192)), wasmTransform(example('pass.wasm'), { bufferSize: 1024, checkpoint: { storage: new SlowStorage(1), every: 1024, saveTimeout: Infinity } }), sink)
    assert.equal(sink.result().length, 8192)
  })

  it('processFile passes it on: a hung save fails the run after it', { timeout: 20_000 }, async (t) => {
    const dir = tempDir(t, 'wasm-sandbox-savetimeout-')
    const input = join(dir, 'in.txt')
    writeFileSync(input, randomLines(64 * 1024))
    await assert.rejects(
      processFile(input, join(dir, 'out.txt'), example('numberer.wasm'), {
        bufferSize: 1024,
        checkpoint: { dir: join(dir, 'ck'), storage: new HungStorage(t), every: 1024, saveTimeout: 300 },
      }),
      { code: 'ERR_WASM_CHECKPOINT_FAILED', message: /took longer than checkpoint\.saveTimeout \(300 ms\)/ },
    )
  })

  it('a tap destroyed while the output is being made durable stores nothing after', async () => {
    const storage = new MemoryCheckpointStorage()
    let saves = 0
    const save = storage.save.bind(storage)
    storage.save = async (checkpoint: Checkpoint) => {
      saves++
      return save(checkpoint)
    }
    let durable!: () => void
    const tap = new CheckpointTap({ storage, optionsHash: '', commit: () => new Promise<void>((resolve) => (durable = resolve)) })
    tap.on('error', () => {})
    tap.offer({ inputOffset: 0, outputOffset: 0, moduleHash: '', state: { memory: new Uint8Array(0), globals: [] } as never })
    assert.equal(typeof durable, 'function', 'the save started: it waits on commit')
    tap.destroy(new Error('the stream failed'))
    durable()
    await delay(20)
    assert.equal(saves, 0, 'storage.save was called after the tap was destroyed')
    assert.equal(tap.checkpointsSaved, 0)
  })

  it('its timer does not hold the process open: a stream waiting on a hung save lets the process exit by itself', async () => {
    const { code, stdout, timedOut } = await runChild('hung-save', [], 10_000)
    assert.equal(timedOut, false, 'the process waited for the save timer (default 30 s)')
    assert.equal(code, 0)
    assert.equal(stdout, 'save called\n', 'the stream reached its save, and neither ended nor failed')
  })
})

function chunkLengths(length: number): number[] {
  const lengths: number[] = []
  for (let at = 0; at < length; at += BUFFER) lengths.push(Math.min(BUFFER, length - at))
  return lengths
}
