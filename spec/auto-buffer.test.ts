/**
 * `bufferSize: 'auto'`: the chunk size is chosen while the stream runs, and the output never
 * depends on the choice (a record is never cut, a stateful guest sees the same bytes).
 */
import assert from 'node:assert/strict'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { describe, it } from 'node:test'
import { MemoryCheckpointStorage, wasmTransform, type SandboxOptions } from '../lib/index.js'
import { AUTO_BUFFER_SIZES, defaultMaxInFlight, resolveOptions } from '../lib/options.js'
import { ChunkSizeTuner } from '../lib/stages/chunk-size-tuner.js'
import { example, fixture, grepRef, numbererRef } from './helpers/reference.js'
import { collector, randomLines } from './helpers/streams.js'

const KiB = 1024

/** `input` in pieces with a pause between, so the stream lasts long enough to be measured. */
function paced(input: Buffer, piece: number, pauseMs: number): Readable {
  return Readable.from(
    (async function* () {
      for (let at = 0; at < input.length; at += piece) {
        yield input.subarray(at, at + piece)
        await new Promise((resolve) => setTimeout(resolve, pauseMs))
      }
    })(),
  )
}

async function through(module: string, options: SandboxOptions, input: Buffer): Promise<{ out: Buffer; stream: ReturnType<typeof wasmTransform> }> {
  const stream = wasmTransform(module, options)
  const sink = collector()
  await pipeline(paced(input, 128 * KiB, 3), stream, sink)
  return { out: sink.result(), stream }
}

describe("bufferSize: 'auto'", () => {
  it('a stateful guest gives the same output as with a fixed size, and the choice is reported', async () => {
    const input = randomLines(16 * 1024 * KiB, 17)
    const { out, stream } = await through(example('numberer.wasm'), { bufferSize: 'auto' }, input)
    assert.deepEqual(out, numbererRef(input))
    const report = stream.metrics().chunking!
    assert.equal(report.auto, true)
    assert.ok((AUTO_BUFFER_SIZES as readonly number[]).includes(report.bufferSize), JSON.stringify(report))
    assert.ok(report.samples.length >= 2, `nothing was measured: ${JSON.stringify(report)}`)
    // In pairs, a size kept and the next one up, from the smallest.
    const tried = report.samples.map((s) => AUTO_BUFFER_SIZES.indexOf(s.bufferSize as (typeof AUTO_BUFFER_SIZES)[number]))
    assert.equal(tried[0], 0, JSON.stringify(report))
    for (let i = 0; i < tried.length; i += 2) assert.equal(tried[i + 1], tried[i]! + 1, JSON.stringify(report))
  })

  it('with a delimiter no record is ever cut, whatever size it picks', async () => {
    const input = randomLines(8 * 1024 * KiB, 5)
    const { out } = await through(example('grep.wasm'), { bufferSize: 'auto', delimiter: '\n', isolation: 'inline' }, input)
    assert.deepEqual(out, grepRef(input))
  })

  it('a WASI program run per chunk keeps its chunk size, and says why', async () => {
    const input = Buffer.from('abc\n'.repeat(100))
    const { out, stream } = await through(fixture('wasi-cat.wasm'), { bufferSize: 'auto', wasi: { mode: 'record' } }, input)
    assert.deepEqual(out, input)
    assert.match(stream.metrics().chunking!.reason, /run per chunk/)
    assert.equal(stream.metrics().chunking!.bufferSize, AUTO_BUFFER_SIZES[0])
  })

  it("a checkpoint taken with 'auto' resumes with 'auto', and not with a fixed size", async () => {
    const input = randomLines(4 * 1024 * KiB, 8)
    const storage = new MemoryCheckpointStorage()
    const options: SandboxOptions = { bufferSize: 'auto', checkpoint: { storage, every: 512 * KiB } }
    const { out } = await through(example('numberer.wasm'), options, input)
    assert.deepEqual(out, numbererRef(input))
    const saved = await storage.loadLatest()
    assert.ok(saved, 'no checkpoint was taken')
    const rest = await through(example('numberer.wasm'), { bufferSize: 'auto', resumeFrom: saved! }, input.subarray(saved!.inputOffset))
    assert.deepEqual(Buffer.concat([out.subarray(0, saved!.outputOffset), rest.out]), numbererRef(input))
    assert.throws(() => wasmTransform(example('numberer.wasm'), { bufferSize: 16 * KiB, resumeFrom: saved! }), { code: 'ERR_WASM_CHECKPOINT_MISMATCH' })
  })

  it('queues to a worker what its first size gets, not what its largest does', () => {
    assert.equal(resolveOptions({ bufferSize: 'auto' }).flowControl.maxInFlight, defaultMaxInFlight(AUTO_BUFFER_SIZES[0]))
    assert.equal(resolveOptions({ bufferSize: 'auto', maxConcurrency: 2, stateless: true }).flowControl.maxInFlight, defaultMaxInFlight(AUTO_BUFFER_SIZES[0], 2))
  })

  it('measures inline while a source that needs no I/O leaves the timers no turn', async () => {
    const piece = Buffer.alloc(1024 * KiB, 'abcdefgh\n')
    // 768 MiB from memory: the stream runs in microtasks from start to end, for well over the
    // five windows of a first comparison (256 MiB took about 190 ms here).
    const source = Readable.from((function* () {
      for (let i = 0; i < 768; i++) yield piece
    })())
    let timersRan = 0
    const timer = setInterval(() => timersRan++, 10)
    const stream = wasmTransform(example('upper.wasm'), { bufferSize: 'auto', isolation: 'inline' })
    await pipeline(source, stream, new Writable({ write: (_chunk, _encoding, callback) => callback() }))
    clearInterval(timer)
    const report = stream.metrics().chunking!
    assert.ok(report.samples.length >= 1, `nothing was measured (timers ran ${timersRan} times): ${JSON.stringify(report)}`)
  })

  it("only the string 'auto' is accepted", () => {
    for (const bad of ['Auto', 'auto ', '64k']) {
      assert.throws(() => wasmTransform(example('upper.wasm'), { bufferSize: bad as 'auto' }), { code: 'ERR_WASM_INVALID_OPTION' })
    }
  })

  describe('the choice, window by window (a scripted clock and progress)', () => {
    /**
     * A tuner over windows in which `mbPerWindow[i]` MB of input moved, each 50 ms long on its
     * clock. The tuner's own timer paces the windows; the measurements are all scripted.
     */
    async function tune(mbPerWindow: number[], maxRecordSize = Infinity): Promise<ReturnType<ChunkSizeTuner['report']>> {
      const chunker = {
        bufferSize: AUTO_BUFFER_SIZES[0] as number,
        maxRecordSize,
        resize(size: number): boolean {
          if (size > maxRecordSize) return false
          this.bufferSize = size
          return true
        },
      }
      let window = -1
      let bytes = 0
      // Read once as the tuner starts, then once per window, right after the clock.
      const tuner = new ChunkSizeTuner(chunker, () => bytes, () => {
        window++
        if (window > 0) bytes += (mbPerWindow[window - 1] ?? 0) * 1048576
        return window * 50
      })
      while (window < mbPerWindow.length && tuner.report().reason === 'measuring') await new Promise((resolve) => setTimeout(resolve, 10))
      tuner.stop()
      return tuner.report()
    }
    const rate = (mb: number): number => mb / 0.05

    it('the first window with input (the start) is not measured; a gain under 10 % goes back', async () => {
      // A slow start, then windows at 256, 64, 64 and 256 KiB: 256 KiB is 2 % better, not enough.
      const report = await tune([5, 51, 50, 50, 51])
      assert.deepEqual(report.samples, [{ bufferSize: 64 * KiB, mbps: rate(50) }, { bufferSize: 256 * KiB, mbps: rate(51) }])
      assert.equal(report.bufferSize, 64 * KiB, 'a gain under 10 % keeps the smaller size, and stops')
      assert.equal(report.reason, '256 KiB chunks changed throughput 2 %, under 10 %: 64 KiB kept')
    })

    it('compares the sizes over windows larger, kept, kept, larger, so a steady drift cancels out', async () => {
      // The machine speeds up 10 MB a window throughout: one window each read 256 KiB as 20 %
      // better; in this order both sides sum to the same.
      const report = await tune([5, 50, 60, 70, 80])
      assert.deepEqual(report.samples, [{ bufferSize: 64 * KiB, mbps: rate(65) }, { bufferSize: 256 * KiB, mbps: rate(65) }])
      assert.equal(report.bufferSize, 64 * KiB)
    })

    it('windows without input are skipped; a size that loses throughput is undone', async () => {
      const report = await tune([0, 0, 5, 0, 60, 50, 50, 60, 40, 60, 0, 60, 40])
      assert.deepEqual(report.samples.map((s) => s.bufferSize), [64 * KiB, 256 * KiB, 256 * KiB, 1024 * KiB])
      assert.equal(report.bufferSize, 256 * KiB)
      assert.equal(report.reason, '1024 KiB chunks changed throughput -33 %, under 10 %: 256 KiB kept')
    })

    it('keeps growing while each size pays, and says when the largest is reached', async () => {
      const report = await tune([5, 20, 10, 10, 20, 40, 20, 20, 40])
      assert.equal(report.bufferSize, 1024 * KiB)
      assert.equal(report.reason, '1024 KiB, the largest tried')
    })

    it('never measures a window shorter than 50 ms, whoever asks (the timer, or a write)', () => {
      const chunker = { bufferSize: AUTO_BUFFER_SIZES[0] as number, maxRecordSize: Infinity, resize: () => true }
      let at = 0
      let bytes = 0
      const tuner = new ChunkSizeTuner(chunker, () => bytes, () => at)
      // Polls at 60 (the start's window), 70, 80, 115, 120, 170, 225 and 280 ms, 5 MB of input
      // before each: windows end at 115 (15 MB, 256 KiB), 170 (10, 64), 225 (5, 64) and 280 (5, 256).
      for (const when of [60, 70, 80, 115, 120, 170, 225, 280]) {
        at = when
        bytes += 5 * 1048576
        tuner.poll()
      }
      tuner.stop()
      const { samples } = tuner.report()
      assert.equal(samples.length, 2, JSON.stringify(samples))
      assert.ok(Math.abs(samples[0]!.mbps - 15 / 0.11) < 1e-9, JSON.stringify(samples))
      assert.ok(Math.abs(samples[1]!.mbps - 20 / 0.11) < 1e-9, JSON.stringify(samples))
    })

    it('stops at the size maxRecordSize allows', async () => {
      const report = await tune([5, 20, 10, 10, 20, 40], 256 * KiB)
      assert.equal(report.bufferSize, 256 * KiB)
      assert.match(report.reason, /maxRecordSize/)
    })
  })
})
