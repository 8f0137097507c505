/**
 * wasmTransformStream: the sandbox as a Web Streams pair. Round trips through Response bodies and
 * Readable.toWeb/fromWeb, typed errors on both sides, backpressure both ways, cancel and abort
 * mid-way (the guest's worker is gone), and chunks the consumer may keep or transfer.
 */
import assert from 'node:assert/strict'
import { Readable } from 'node:stream'
import { ReadableStream } from 'node:stream/web'
import { describe, it } from 'node:test'
import { WasmSandboxError, wasmTransformStream, type Isolation } from '../lib/index.js'
import { defaultHighWaterMark, defaultMaxInFlight } from '../lib/options.js'
import { runChild } from './helpers/child.js'
import { example, fixture, numbererRef, upperRef } from './helpers/reference.js'
import { delay, randomLines, sourceOf } from './helpers/streams.js'

const upper = example('upper.wasm')

/** Everything a Web readable yields, concatenated. */
async function drain(readable: ReadableStream<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = []
  for await (const chunk of readable) parts.push(chunk)
  return Buffer.concat(parts)
}

/** An endless Web source of `size`-byte chunks that counts what was pulled and why it was cancelled. */
function endlessSource(size = 16 * 1024): ReadableStream<Uint8Array> & { pulled: number; cancelReason: unknown } {
  const state = { pulled: 0, cancelReason: undefined as unknown }
  const stream = new ReadableStream<Uint8Array>(
    {
      pull(controller) {
        state.pulled += size
        controller.enqueue(new Uint8Array(size).fill(0x61))
      },
      cancel(reason) {
        state.cancelReason = reason
      },
    },
    { highWaterMark: 0 },
  )
  return Object.defineProperties(stream, {
    pulled: { get: () => state.pulled },
    cancelReason: { get: () => state.cancelReason },
  }) as ReadableStream<Uint8Array> & { pulled: number; cancelReason: unknown }
}

/** Waits until `condition()` holds, failing instead of hanging after `ms`. */
async function until(condition: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms
  while (!condition()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`)
    await delay(5)
  }
}

function isSandboxError(code: string, offset?: number): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof WasmSandboxError, `a WasmSandboxError, got ${String(err)}`)
    assert.equal(err.code, code)
    if (offset !== undefined) assert.equal(err.offset, offset)
    return true
  }
}

describe('wasmTransformStream: data', () => {
  it('transforms a Response body with pipeThrough', async () => {
    const body = new Response('hello, web streams\n').body! as unknown as ReadableStream<Uint8Array>
    const out = body.pipeThrough(wasmTransformStream(upper))
    assert.equal(await new Response(out as never).text(), 'HELLO, WEB STREAMS\n')
  })

  for (const isolation of ['worker', 'inline'] as Isolation[]) {
    it(`round-trips Readable.toWeb -> pipeThrough -> Readable.fromWeb, stateful guest included (${isolation})`, async () => {
      const input = randomLines(2 * 1024 * 1024 + 17, 9)
      const sizes = [1, 700, 65_536, 13, 100_000]
      const web = Readable.toWeb(sourceOf(input, sizes)) as unknown as ReadableStream<Uint8Array>
      const upperOut = await drain(web.pipeThrough(wasmTransformStream(upper, { isolation })))
      assert.ok(upperOut.equals(upperRef(input)))

      const numbered = wasmTransformStream(example('numberer.wasm'), { isolation, delimiter: '\n', bufferSize: 4096 })
      const source = Readable.toWeb(sourceOf(input, sizes)) as unknown as ReadableStream<Uint8Array>
      const parts: Buffer[] = []
      for await (const chunk of Readable.fromWeb(source.pipeThrough(numbered) as never)) parts.push(chunk as Buffer)
      assert.ok(Buffer.concat(parts).equals(numbererRef(input)))
      assert.equal(numbered.metrics().bytesIn, input.length)
    })
  }

  it('takes any ArrayBufferView or ArrayBuffer, empty ones included', async () => {
    const ts = wasmTransformStream(upper)
    const writer = ts.writable.getWriter()
    const reading = drain(ts.readable)
    const bytes = new TextEncoder().encode('abcdef')
    await writer.write(new Uint8Array(0))
    await writer.write(bytes.subarray(0, 2))
    await writer.write(new DataView(bytes.buffer, 2, 2) as never)
    await writer.write(bytes.slice(4).buffer as never)
    await writer.write(Buffer.from('gh'))
    await writer.close()
    assert.equal((await reading).toString(), 'ABCDEFGH')
  })

  it('hands out chunks that own their memory, as a fetch body does (chunk.buffer is just the chunk)', async () => {
    // Small emits (16 bytes per call) come out of the sandbox as small Buffers, the kind Node
    // carves out of a shared 8 KiB pool: code that reads chunk.buffer (a digest, a decoder, a
    // transfer) would see other streams' bytes in it.
    const input = randomLines(64 * 1024, 4)
    const ts = wasmTransformStream(upper, { bufferSize: 16 })
    const writing = new Response(input).body!.pipeTo(ts.writable as never)
    const whole: Buffer[] = []
    for await (const chunk of ts.readable) {
      assert.equal(Object.getPrototypeOf(chunk), Uint8Array.prototype, 'a plain Uint8Array')
      assert.equal(chunk.byteOffset, 0)
      assert.equal(chunk.buffer.byteLength, chunk.byteLength)
      whole.push(Buffer.from(chunk.buffer))
    }
    await writing
    assert.ok(Buffer.concat(whole).equals(upperRef(input)))
  })
})

describe('wasmTransformStream: errors', () => {
  it('a failing guest errors the readable with the WasmSandboxError and cancels the source with it', async () => {
    const input = Buffer.from(randomLines(8000, 2).toString().replace(/!/g, '.'))
    input[5000] = 0x21 // '!': the chunk at 4096 fails
    const cancelled: unknown[] = []
    const source = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new Uint8Array(input))
      },
      cancel(reason) {
        cancelled.push(reason)
      },
    })
    const ts = wasmTransformStream(fixture('fail-on-bang.wasm'), { bufferSize: 1024 })
    const out = source.pipeThrough(ts)
    let error: unknown
    await assert.rejects(drain(out), (err) => {
      error = err
      return isSandboxError('ERR_WASM_GUEST_ERROR', 4096)(err)
    })
    await until(() => cancelled.length > 0, 'the source to be cancelled')
    assert.deepEqual(cancelled, [error], 'the source is cancelled once, with the same error')
    assert.equal(ts.duplex.destroyed, true)
  })

  it('limits apply as for wasmTransform (maxOutput)', async () => {
    const ts = wasmTransformStream(upper, { limits: { maxOutput: 1000 } })
    const body = new Response(Buffer.alloc(64 * 1024, 0x61)).body! as unknown as ReadableStream<Uint8Array>
    await assert.rejects(drain(body.pipeThrough(ts)), isSandboxError('ERR_WASM_OUTPUT_LIMIT'))
  })

  it('bad options throw at once; a missing module errors both sides', async () => {
    assert.throws(() => wasmTransformStream(upper, { bufferSize: 0 }), isSandboxError('ERR_WASM_INVALID_OPTION'))
    const ts = wasmTransformStream('/nonexistent/guest.wasm')
    const writer = ts.writable.getWriter()
    await assert.rejects(ts.readable.getReader().read(), isSandboxError('ERR_WASM_MODULE_NOT_FOUND'))
    await assert.rejects(writer.write(new Uint8Array(1)), isSandboxError('ERR_WASM_MODULE_NOT_FOUND'))
  })

  it('a chunk that is not bytes is a TypeError on both sides and ends the guest', async () => {
    const ts = wasmTransformStream(upper)
    const writer = ts.writable.getWriter()
    const reading = ts.readable.getReader().read()
    await assert.rejects(writer.write('text' as never), TypeError)
    await assert.rejects(reading, TypeError)
    assert.equal(ts.duplex.destroyed, true)
  })

  it('the duplex destroyed underneath ends both sides instead of leaving them waiting', async () => {
    const ts = wasmTransformStream(upper)
    const reading = ts.readable.getReader().read()
    ts.duplex.destroy()
    await assert.rejects(reading, { code: 'ERR_STREAM_PREMATURE_CLOSE' })
    await assert.rejects(ts.writable.getWriter().write(new Uint8Array(1)), { code: 'ERR_STREAM_PREMATURE_CLOSE' })
  })
})

describe('wasmTransformStream: backpressure', () => {
  it('a consumer that stops reading stops the source (bounded, then no more pulls)', async () => {
    const source = endlessSource()
    const reader = source.pipeThrough(wasmTransformStream(upper)).getReader()
    // A failed check must still end the stream: its busy worker would keep this file's process alive.
    try {
      for (let i = 0; i < 3; i++) assert.equal((await reader.read()).done, false)
      // Let the pipe fill every buffer it has, then check it stopped.
      let last = -1
      await until(
        () => {
          const settled = source.pulled === last
          last = source.pulled
          return settled
        },
        'the source to stop being pulled',
      )
      await delay(100)
      assert.equal(source.pulled, last, 'nothing more pulled while nobody reads')
      // Six stage buffers of a highWaterMark, the worker's input and output rings (maxInFlight
      // chunks, one more on the way out) and the Web streams' queues: 8 MiB, not endless.
      const bufferSize = 64 * 1024
      const bound = 8 * defaultHighWaterMark(bufferSize) + 2 * (defaultMaxInFlight(bufferSize) + 1) * bufferSize
      assert.ok(source.pulled < bound, `bounded: ${source.pulled} bytes pulled (bound ${bound})`)
      // Reading again resumes the flow.
      for (let i = 0; i < 200; i++) await reader.read()
      assert.ok(source.pulled > last)
    } finally {
      await reader.cancel()
    }
  })

  it('a writer with no reader waits (desiredSize, ready) once the buffers are full', async () => {
    const ts = wasmTransformStream(upper)
    const writer = ts.writable.getWriter()
    const chunk = new Uint8Array(16 * 1024).fill(0x62)
    let accepted = 0
    try {
      for (;;) {
        const ready = await Promise.race([writer.ready.then(() => true), delay(200).then(() => false)])
        if (!ready) break
        writer.write(chunk).catch(() => {})
        accepted += chunk.length
        assert.ok(accepted < 16 * 1024 * 1024, 'the writer was never made to wait')
      }
      assert.ok((writer.desiredSize ?? 1) <= 0)
    } catch (err) {
      // Its busy worker would keep this file's process alive.
      ts.duplex.destroy()
      throw err
    }
    // A reader frees the way: every accepted byte comes out.
    const reading = drain(ts.readable)
    await writer.ready
    await writer.close()
    const out = await reading
    assert.equal(out.length, accepted)
    assert.ok(out.every((b) => b === 0x42))
  })
})

describe('wasmTransformStream: cancel and abort', () => {
  it('cancelling the readable mid-way destroys the duplex and every stage, and cancels the source', async () => {
    const source = endlessSource()
    const ts = wasmTransformStream(upper)
    const reader = source.pipeThrough(ts).getReader()
    for (let i = 0; i < 5; i++) await reader.read()
    await reader.cancel('enough')
    await until(() => ts.duplex.destroyed && ts.duplex.stages.every((s) => (s as { destroyed?: boolean }).destroyed), 'every stage to be destroyed')
    await until(() => source.cancelReason !== undefined, 'the source to be cancelled')
    assert.equal(source.cancelReason, 'enough', 'the source is cancelled with the reason given')
  })

  it('aborting the writable mid-way errors the readable with the reason and destroys the duplex', async () => {
    const ts = wasmTransformStream(upper)
    const writer = ts.writable.getWriter()
    const reader = ts.readable.getReader()
    await writer.write(new TextEncoder().encode('abc'))
    assert.equal(new TextDecoder().decode((await reader.read()).value), 'ABC')
    const reason = new Error('stop')
    await writer.abort(reason)
    await assert.rejects(reader.read(), (err) => err === reason)
    await until(() => ts.duplex.destroyed, 'the duplex to be destroyed')
  })

  it('aborting the writable while a write waits for room settles, fails that write and destroys the duplex', async () => {
    // abort() waits for the write in flight, and that one waited for a drain nobody would
    // cause (nothing reads): abort never settled and the guest's worker stayed for good.
    const ts = wasmTransformStream(upper)
    const writer = ts.writable.getWriter()
    const chunk = new Uint8Array(1024 * 1024).fill(0x61)
    let pending: Promise<void> | undefined
    for (let i = 0; i < 64 && pending === undefined; i++) {
      const write = writer.write(chunk)
      const blocked = await Promise.race([write.then(() => false), new Promise<boolean>((resolve) => setTimeout(() => resolve(true), 100))])
      if (blocked) pending = write
    }
    assert.ok(pending, 'no write ever waited for room')
    const reason = new Error('stop')
    const aborted = await Promise.race([writer.abort(reason).then(() => 'settled'), new Promise((resolve) => setTimeout(() => resolve('hung'), 5000))])
    assert.equal(aborted, 'settled')
    await assert.rejects(pending, (err) => err === reason)
    await until(() => ts.duplex.destroyed, 'the duplex to be destroyed')
  })

  it("pipeThrough's AbortSignal stops the pipe and the guest, and the source is cancelled", async () => {
    const source = endlessSource()
    const ts = wasmTransformStream(upper)
    const controller = new AbortController()
    const reader = source.pipeThrough(ts, { signal: controller.signal }).getReader()
    for (let i = 0; i < 3; i++) await reader.read()
    const reason = new Error('user pressed stop')
    controller.abort(reason)
    await assert.rejects(
      (async () => {
        for (;;) if ((await reader.read()).done) return
      })(),
      (err) => err === reason,
    )
    await until(() => ts.duplex.destroyed, 'the duplex to be destroyed')
    await until(() => source.cancelReason === reason, 'the source to be cancelled with the reason')
  })

  for (const mode of ['cancel', 'abort']) {
    it(`${mode === 'cancel' ? 'cancel' : 'abort'} while the guest runs terminates it: the process exits by itself`, async () => {
      const { code, stdout, stderr, timedOut } = await runChild('web-cancel', [mode], 20_000)
      assert.equal(timedOut, false, `the child process hung: the guest kept running\n${stderr}`)
      assert.equal(code, 0, stderr)
      const result = JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, unknown>
      assert.equal(result.running, 'running', 'the guest was inside process_chunk when stopped')
      assert.equal(result.duplexDestroyed, true)
      if (mode === 'cancel') assert.equal(result.writableClosed, 'enough', 'the writable errors with the cancel reason')
      else assert.equal(result.readRejected, 'stop', 'the readable errors with the abort reason')
    })
  }
})
