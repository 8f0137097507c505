import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { describe, it } from 'node:test'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { isWasmSandboxError } from '../lib/errors.js'
import type { BackpressureStrategy } from '../lib/options.js'
import { BackpressureGate, type BackpressureGateOptions, type GateDrop } from '../lib/stages/backpressure-gate.js'
import { Chunker } from '../lib/stages/chunker.js'
import { offsetOf, tagOffset } from '../lib/stages/offset.js'
import { once, randomLines, sourceOf } from './helpers/streams.js'

const RECORD = /^rec \d{8} [a-z]*$/

/** Record `i`: 14 to 40 bytes, newline-terminated. */
function record(i: number): string {
  return `rec ${String(i).padStart(8, '0')} ${'abcdefghijklmnopqrstuvwxyz'.slice(0, i % 27)}\n`
}

interface Source {
  stream: Readable
  /** Every chunk produced, in order (the input). */
  chunks: Buffer[]
  bytes: number
  /** ms from start to the end of input. */
  doneAt: number
  pauses: number
  maxChunk: number
}

/**
 * A source of `count` record-aligned chunks (4 to 8 whole records each), tagged with their input
 * offset, produced as fast as they are asked for. `probe` runs before each one is produced.
 */
function recordSource(count: number, highWaterMark: number, probe: () => void = () => {}): Source {
  const started = Date.now()
  let rec = 0
  const src: Source = { stream: undefined as unknown as Readable, chunks: [], bytes: 0, doneAt: -1, pauses: 0, maxChunk: 0 }
  src.stream = new Readable({
    highWaterMark,
    read() {
      probe()
      if (src.chunks.length === count) {
        src.doneAt = Date.now() - started
        this.push(null)
        return
      }
      let text = ''
      for (let n = 4 + (src.chunks.length % 5); n > 0; n--) text += record(rec++)
      const chunk = tagOffset(Buffer.from(text), src.bytes)
      src.chunks.push(chunk)
      src.bytes += chunk.length
      src.maxChunk = Math.max(src.maxChunk, chunk.length)
      this.push(chunk)
    },
  })
  // pipe() pauses a source as it unpipes it at the end: only pauses before that count.
  src.stream.on('pause', () => {
    if (src.doneAt < 0) src.pauses++
  })
  return src
}

interface Sink {
  stream: Writable
  chunks: Buffer[]
  bytes: number
  /** Writes the sink has finished (called back). */
  written: number
}

/**
 * A sink that stalls on its first write, `stallMs` or until `stallUntil` settles, then waits
 * `perWriteMs` (0: at once) per write.
 */
function slowSink(opts: {
  stallMs?: number
  stallUntil?: Promise<unknown>
  perWriteMs?: number
  highWaterMark?: number
  probe?: () => void
}): Sink {
  const sink: Sink = { stream: undefined as unknown as Writable, chunks: [], bytes: 0, written: 0 }
  sink.stream = new Writable({
    highWaterMark: opts.highWaterMark ?? 1,
    write(chunk: Buffer, _enc, cb) {
      opts.probe?.()
      const first = sink.chunks.length === 0
      sink.chunks.push(chunk)
      sink.bytes += chunk.length
      const done = (): void => {
        sink.written++
        cb()
      }
      if (first && opts.stallUntil) {
        void opts.stallUntil.then(done, done)
        return
      }
      const wait = first && opts.stallMs ? opts.stallMs : (opts.perWriteMs ?? 0)
      if (wait > 0) setTimeout(done, wait)
      else done()
    },
  })
  return sink
}

function collectDrops(gate: BackpressureGate): GateDrop[] {
  const drops: GateDrop[] = []
  gate.on('drop', (d: GateDrop) => drops.push(d))
  return drops
}

/**
 * Output + dropped = input: what the sink got and what was dropped tile the input exactly, in
 * order, each received chunk is the input at its offset, and holds whole records only.
 */
function assertAccounted(gate: BackpressureGate, input: Buffer, sink: Sink, drops: GateDrop[]): void {
  const s = gate.stats
  assert.equal(s.bytesIn, input.length)
  assert.equal(s.chunksOut + s.chunksDropped, s.chunksIn)
  assert.equal(s.bytesOut + s.bytesDropped, s.bytesIn)
  assert.equal(sink.chunks.length, s.chunksOut)
  assert.equal(sink.bytes, s.bytesOut)
  assert.equal(drops.length, s.chunksDropped)
  assert.equal(drops.reduce((n, d) => n + d.length, 0), s.bytesDropped)
  const pieces: Array<[number, number]> = drops.map((d) => [d.offset, d.length])
  for (const chunk of sink.chunks) {
    const offset = offsetOf(chunk)
    assert.ok(offset !== undefined, 'the offset tag survives the gate')
    assert.ok(chunk.equals(input.subarray(offset, offset + chunk.length)), `chunk at ${offset} is the input there`)
    assert.equal(chunk[chunk.length - 1], 0x0a, `chunk at ${offset} ends with a whole record`)
    pieces.push([offset, chunk.length])
  }
  pieces.sort((a, b) => a[0] - b[0])
  let at = 0
  for (const [offset, length] of pieces) {
    assert.equal(offset, at, 'no gap and no overlap between passed and dropped chunks')
    at += length
  }
  assert.equal(at, input.length)
  const lines = Buffer.concat(sink.chunks).toString().split('\n')
  assert.equal(lines.pop(), '')
  for (const line of lines) assert.match(line, RECORD)
}

function gate(strategy: BackpressureStrategy, flowControl: BackpressureGateOptions['flowControl'], highWaterMark = 1024): BackpressureGate {
  return new BackpressureGate({ strategy, flowControl, highWaterMark })
}

describe('BackpressureGate: block', () => {
  it('loses nothing, keeps its buffers bounded, and pauses the source', async () => {
    const hwm = 1024
    const g = gate('block', undefined, hwm)
    let maxBuffered = 0
    let maxAhead = 0
    const src = recordSource(100, hwm)
    const sink = slowSink({
      perWriteMs: 1,
      highWaterMark: hwm,
      probe: () => {
        maxBuffered = Math.max(maxBuffered, g.readableLength + g.writableLength)
        maxAhead = Math.max(maxAhead, src.bytes - sink.bytes)
      },
    })
    const drops = collectDrops(g)
    await pipeline(src.stream, g, sink.stream)
    const input = Buffer.concat(src.chunks)
    assert.equal(g.stats.chunksDropped, 0)
    assert.ok(Buffer.concat(sink.chunks).equals(input))
    assertAccounted(g, input, sink, drops)
    // Each side takes chunks while below its highWaterMark, so overshoots by up to a chunk; and
    // the chunk whose callback Transform holds is counted on both sides.
    assert.ok(maxBuffered <= 2 * hwm + 2 * src.maxChunk, `gate buffered ${maxBuffered} bytes (hwm ${hwm})`)
    // The source buffer, the gate's two sides and the sink's hold a highWaterMark each, give or take a chunk.
    assert.ok(maxAhead <= 4 * hwm + 2 * src.maxChunk, `the source ran ${maxAhead} bytes ahead of the sink (of ${src.bytes})`)
    assert.ok(src.pauses > 0, 'the source was paused')
  })
})

describe('BackpressureGate: drop', () => {
  it('never pauses the source, drops whole chunks under pressure and accounts for every byte', async () => {
    const hwm = 2048
    const g = gate('drop', { highWaterMark: hwm, lowWaterMark: 1024 })
    let maxBuffered = 0
    const probe = (): void => {
      maxBuffered = Math.max(maxBuffered, g.readableLength + g.writableLength)
    }
    // How many writes the sink had finished when the source produced its end.
    let writtenAtEnd = -1
    const src = recordSource(1000, 1024, () => {
      probe()
      if (src.chunks.length === 1000 && writtenAtEnd < 0) writtenAtEnd = sink.written
    })
    const sink = slowSink({ stallMs: 500, perWriteMs: 1, probe })
    const drops = collectDrops(g)
    await pipeline(src.stream, g, sink.stream)
    assert.equal(src.pauses, 0, 'the source was never paused')
    // Nothing on the way from the source through a 'drop' gate waits for a timer or for the
    // sink, so the source runs to its end before the sink's first (stalled) write can finish,
    // however loaded the machine is. A gate that held the source at all (a held callback, a
    // delay, write() returning false) would let the sink finish writes first.
    assert.equal(writtenAtEnd, 0, `the source ended (at ${src.doneAt} ms) after the sink finished ${writtenAtEnd} writes`)
    assert.ok(g.stats.bytesDropped > 0)
    assert.ok(g.stats.chunksOut > 0)
    assertAccounted(g, Buffer.concat(src.chunks), sink, drops)
    assert.ok(maxBuffered <= hwm + src.maxChunk, `gate buffered ${maxBuffered} bytes (hwm ${hwm})`)
    assert.ok(maxBuffered >= hwm - src.maxChunk, `gate buffered up to ${maxBuffered} bytes before dropping`)
  })

  it('with a real Chunker in front, the sink gets only whole records, in order', async () => {
    const input = Buffer.concat([randomLines(200_000, 7), Buffer.from('\n')])
    const chunker = new Chunker({ bufferSize: 512, delimiter: '\n', highWaterMark: 1024 })
    const g = gate('drop', { highWaterMark: 2048 })
    const sink = slowSink({ stallMs: 200, perWriteMs: 1 })
    const drops = collectDrops(g)
    await pipeline(sourceOf(input, [1000, 333, 4096]), chunker, g, sink.stream)
    assert.ok(g.stats.chunksDropped > 0)
    assert.equal(g.stats.bytesOut + g.stats.bytesDropped, input.length)
    assert.equal(drops.reduce((n, d) => n + d.length, 0), g.stats.bytesDropped)
    let last = -1
    for (const chunk of sink.chunks) {
      const offset = offsetOf(chunk)!
      assert.ok(offset > last, 'in order')
      last = offset
      assert.ok(offset === 0 || input[offset - 1] === 0x0a, `chunk at ${offset} starts a record`)
      assert.equal(chunk[chunk.length - 1], 0x0a, `chunk at ${offset} ends a record`)
      assert.ok(chunk.equals(input.subarray(offset, offset + chunk.length)))
    }
  })

  it('hysteresis: starts dropping at the high watermark and stops at the low one', () => {
    const g = gate('drop', { highWaterMark: 1000, lowWaterMark: 400 })
    const chunk = (): Buffer => Buffer.alloc(100, 0x0a)
    const drops = collectDrops(g)
    for (let i = 0; i < 10; i++) g.write(chunk()) // nobody reads: 1000 bytes buffered
    assert.equal(g.readableLength, 1000)
    assert.equal(g.stats.chunksDropped, 0)
    g.write(chunk())
    assert.equal(g.stats.chunksDropped, 1, 'dropped at the high watermark')
    g.read(500) // 500 buffered: between the watermarks, still shedding
    g.write(chunk())
    assert.equal(g.stats.chunksDropped, 2)
    g.read(100) // 400: at the low watermark
    g.write(chunk())
    assert.equal(g.stats.chunksDropped, 2, 'passes again at the low watermark')
    assert.equal(g.readableLength, 500)
    assert.deepEqual(drops, [
      { offset: 1000, length: 100 },
      { offset: 1100, length: 100 },
    ], 'untagged chunks are reported at their running offset')
    g.destroy()
  })

  it('calls the write callback at once even with a chunk larger than every watermark', () => {
    const g = gate('drop', { highWaterMark: 10, lowWaterMark: 5 }, 10)
    let called = 0
    assert.equal(g.write(Buffer.alloc(1000), () => called++), true)
    assert.equal(g.write(Buffer.alloc(1000), () => called++), true)
    assert.equal(g.stats.chunksOut, 1)
    assert.equal(g.stats.chunksDropped, 1)
    g.destroy()
    return new Promise<void>((resolve) => setImmediate(() => {
      assert.equal(called, 2)
      resolve()
    }))
  })
})

describe('BackpressureGate: sample', () => {
  it('passes about one chunk in sampleRate under pressure', async () => {
    const hwm = 8192
    const g = gate('sample', { highWaterMark: hwm, sampleRate: 10 })
    const src = recordSource(350, 1024)
    const sink = slowSink({ stallMs: 300 })
    const drops = collectDrops(g)
    await pipeline(src.stream, g, sink.stream)
    assertAccounted(g, Buffer.concat(src.chunks), sink, drops)
    // The sink stalls past the end of input, so pressure, once on, lasts: every chunk from
    // the first one dropped arrived under it.
    const firstDropped = src.chunks.findIndex((c) => offsetOf(c) === drops[0]!.offset)
    const underPressure = g.stats.chunksIn - firstDropped
    const sampled = g.stats.chunksOut - firstDropped
    assert.ok(underPressure > 200, `${underPressure} chunks under pressure`)
    assert.ok(sampled >= underPressure / 15 && sampled <= underPressure / 6, `passed ${sampled} of ${underPressure} under pressure`)
  })

  it('never lets the buffer exceed 2 × highWaterMark', async () => {
    const hwm = 2048
    const g = gate('sample', { highWaterMark: hwm, sampleRate: 2 })
    let maxBuffered = 0
    const probe = (): void => {
      maxBuffered = Math.max(maxBuffered, g.readableLength + g.writableLength)
    }
    const src = recordSource(2000, 1024, probe)
    const sink = slowSink({ stallMs: 200, perWriteMs: 1, probe })
    const drops = collectDrops(g)
    await pipeline(src.stream, g, sink.stream)
    assertAccounted(g, Buffer.concat(src.chunks), sink, drops)
    assert.ok(g.stats.chunksDropped > 1000)
    assert.ok(maxBuffered <= 2 * hwm, `buffered ${maxBuffered} bytes, cap ${2 * hwm}`)
    assert.ok(maxBuffered > hwm + src.maxChunk, `sampling let the buffer grow past the high watermark (${maxBuffered})`)
  })
})

describe('BackpressureGate: adaptive', () => {
  it('drops nothing when the consumer keeps up', async () => {
    const g = gate('adaptive', { highWaterMark: 2048 })
    const src = recordSource(2000, 1024)
    const sink = slowSink({ highWaterMark: 16 * 1024 })
    const drops = collectDrops(g)
    await pipeline(src.stream, g, sink.stream)
    assert.equal(g.stats.chunksDropped, 0)
    assert.equal(g.stats.chunksOut, 2000)
    assertAccounted(g, Buffer.concat(src.chunks), sink, drops)
  })

  it('delays, then drops, while the consumer is stalled', async () => {
    const hwm = 2048
    const g = gate('adaptive', { highWaterMark: hwm, lowWaterMark: 1024, maxDelay: 20 })
    let maxBuffered = 0
    const probe = (): void => {
      maxBuffered = Math.max(maxBuffered, g.readableLength + g.writableLength)
    }
    const src = recordSource(1000, 1024, probe)
    // Stalled until the input has all gone through the gate, not for a fixed time: the delays
    // are timers, which a loaded machine can stretch past any fixed stall.
    const sink = slowSink({ stallUntil: once(src.stream, 'end'), perWriteMs: 1, probe })
    const drops = collectDrops(g)
    await pipeline(src.stream, g, sink.stream)
    assertAccounted(g, Buffer.concat(src.chunks), sink, drops)
    assert.ok(g.stats.delays > 0, 'delayed between the watermarks')
    assert.ok(g.stats.chunksDropped > 0, 'dropped above the high watermark')
    assert.ok(maxBuffered <= hwm + src.maxChunk, `buffered ${maxBuffered} bytes (hwm ${hwm})`)
  })

  // No wall-clock upper bounds (a loaded machine stretches any of them): the delays the gate asks
  // of setTimeout are exact, a held callback cannot come back before its timer (timers never fire
  // early), and an unheld one comes back before the event loop turns (no timer at all).
  it('holds the write callback for longer the fuller the buffer', async (ctx) => {
    const timers = ctx.mock.method(globalThis, 'setTimeout')
    const g = gate('adaptive', { highWaterMark: 1000, lowWaterMark: 0, maxDelay: 200 })
    const waited: number[] = []
    const atOnce: boolean[] = []
    const write = (): Promise<void> =>
      new Promise((resolve, reject) => {
        const t = Date.now()
        let turned = false
        setImmediate(() => (turned = true))
        g.write(Buffer.alloc(250), (err) => {
          if (err) reject(err)
          waited.push(Date.now() - t)
          atOnce.push(!turned)
          resolve()
        })
      })
    for (let i = 0; i < 4; i++) await write() // 0, 250, 500, 750 bytes buffered: 0, 50, 100, 150 ms
    await write() // 1000: dropped at once
    assert.deepEqual(
      { out: g.stats.chunksOut, dropped: g.stats.chunksDropped, delays: g.stats.delays },
      { out: 4, dropped: 1, delays: 3 },
    )
    assert.deepEqual(timers.mock.calls.map((c) => c.arguments[1]), [50, 100, 150], 'the delay grows with the bytes buffered')
    assert.deepEqual(atOnce, [true, false, false, false, true], `called back at once (waited ${waited.join(', ')} ms)`)
    for (const [i, ms] of [[1, 50], [2, 100], [3, 150]] as const) {
      assert.ok(waited[i]! >= ms - 2, `waited ${waited.join(', ')} ms`)
    }
    g.destroy()
  })

  it('reuses its timer when the delay repeats', async (ctx) => {
    const timers = ctx.mock.method(globalThis, 'setTimeout')
    const g = gate('adaptive', { highWaterMark: 1000, lowWaterMark: 0, maxDelay: 100 })
    const write = (): Promise<number> =>
      new Promise((resolve) => {
        const t = Date.now()
        g.write(Buffer.alloc(250), () => resolve(Date.now() - t))
      })
    await write() // passes at once
    const waited: number[] = []
    for (let i = 0; i < 3; i++) {
      waited.push(await write()) // 250 bytes buffered each time: 25 ms
      g.read(250)
    }
    assert.equal(g.stats.delays, 3)
    assert.deepEqual(timers.mock.calls.map((c) => c.arguments[1]), [25], 'one timer, refreshed for the later delays')
    for (const ms of waited) assert.ok(ms >= 23, `waited ${waited.join(', ')} ms`)
    g.destroy()
  })

  it('destroy while a delay is pending: close once, no callback after, no timer left', async () => {
    const g = gate('adaptive', { highWaterMark: 1000, lowWaterMark: 0, maxDelay: 300 })
    let closes = 0
    const errors: unknown[] = []
    g.on('close', () => closes++)
    g.on('error', (err) => errors.push(err))
    let first = 0
    let held = 0
    const queued: Array<string | undefined> = []
    g.write(Buffer.alloc(100), () => first++)
    g.write(Buffer.alloc(100), () => held++) // 100 bytes buffered: held for 30 ms
    g.write(Buffer.alloc(100), (err) => queued.push((err as NodeJS.ErrnoException | null | undefined)?.code)) // queued behind it
    // Not a timer: on a loaded machine a few ms can outlast the 30 ms delay. The first callback
    // comes on the next tick; no timer can fire before it.
    await new Promise((resolve) => process.nextTick(resolve))
    assert.equal(first, 1)
    assert.equal(g.stats.delays, 1)
    assert.equal(held, 0, 'the second write is being held')
    g.destroy()
    g.destroy()
    await new Promise((resolve) => setTimeout(resolve, 100))
    assert.equal(closes, 1)
    assert.deepEqual(errors, [])
    assert.equal(g.stats.chunksOut, 1, 'the held chunk was not passed after destroy')
    // The held write is abandoned, as any destroyed stream's in-flight write is; with a write in
    // flight, readable-stream does not fail the queued ones either (errorBuffer waits for it).
    assert.equal(held, 0, 'no callback after destroy')
    assert.deepEqual(queued, [], 'no callback after destroy')
  })

  it('a process that destroys a gate with a long delay pending exits by itself', async () => {
    const gateUrl = new URL('../lib/stages/backpressure-gate.js', import.meta.url).href
    const script = `
      import { BackpressureGate } from ${JSON.stringify(gateUrl)}
      const g = new BackpressureGate({ strategy: 'adaptive', flowControl: { highWaterMark: 1000, lowWaterMark: 0, maxDelay: 60000 } })
      let closes = 0, late = 0
      g.on('close', () => closes++)
      g.write(Buffer.alloc(100))
      g.write(Buffer.alloc(100), () => late++)
      setTimeout(() => {
        g.destroy()
        process.on('exit', () => console.log(JSON.stringify({ closes, late, delays: g.stats.delays })))
      }, 20)
    `
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
    let stdout = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    const killer = setTimeout(() => child.kill('SIGKILL'), 10_000)
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve))
    clearTimeout(killer)
    assert.equal(code, 0, 'exited by itself (no timer left)')
    assert.deepEqual(JSON.parse(stdout), { closes: 1, late: 0, delays: 1 })
  })
})

describe('BackpressureGate: options', () => {
  it('refuses an unknown strategy with ERR_WASM_INVALID_OPTION', () => {
    assert.throws(
      () => new BackpressureGate({ strategy: 'fast' as BackpressureStrategy }),
      (err: unknown) => isWasmSandboxError(err) && err.code === 'ERR_WASM_INVALID_OPTION' && /'block', 'drop'/.test(err.message),
    )
  })

  for (const [name, options] of [
    ['highWaterMark 0', { highWaterMark: 0 }],
    ['flowControl.highWaterMark 1.5', { flowControl: { highWaterMark: 1.5 } }],
    ['lowWaterMark above highWaterMark', { flowControl: { highWaterMark: 100, lowWaterMark: 101 } }],
    ['negative lowWaterMark', { flowControl: { lowWaterMark: -1 } }],
    ['sampleRate 0', { strategy: 'sample', flowControl: { sampleRate: 0 } }],
    ['maxDelay -1', { strategy: 'adaptive', flowControl: { maxDelay: -1 } }],
    ['maxDelay NaN', { strategy: 'adaptive', flowControl: { maxDelay: NaN } }],
    ['flowControl not an object', { flowControl: 5 }],
    ['options not an object', 'drop'],
  ] as unknown as Array<[string, BackpressureGateOptions]>) {
    it(`refuses ${name}`, () => {
      assert.throws(() => new BackpressureGate(options), (err: unknown) => isWasmSandboxError(err) && err.code === 'ERR_WASM_INVALID_OPTION')
    })
  }

  it('defaults: block, lowWaterMark half of highWaterMark, and the options object is left alone', () => {
    const options = { strategy: 'drop' as const, flowControl: { highWaterMark: 1000 } }
    const frozen = JSON.stringify(options)
    const g = new BackpressureGate(options)
    assert.equal(JSON.stringify(options), frozen)
    for (let i = 0; i < 11; i++) g.write(Buffer.alloc(100))
    assert.equal(g.stats.chunksDropped, 1)
    g.read(500) // 500 buffered: the default low watermark
    g.write(Buffer.alloc(100))
    assert.equal(g.stats.chunksDropped, 1)
    g.destroy()
    assert.equal(new BackpressureGate().strategy, 'block')
  })

  it('every lossy strategy is accepted; each keeps stats as plain numbers', () => {
    for (const strategy of ['block', 'drop', 'sample', 'adaptive'] as const) {
      const g = new BackpressureGate({ strategy })
      assert.equal(g.strategy, strategy)
      assert.deepEqual(g.stats, { chunksIn: 0, bytesIn: 0, chunksOut: 0, bytesOut: 0, chunksDropped: 0, bytesDropped: 0, delays: 0 })
      g.destroy()
    }
  })
})
