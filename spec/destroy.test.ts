import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { Duplex } from 'node:stream'
import { wasmTransform } from '../lib/index.js'
import { example } from './helpers/reference.js'
import type { Seen } from './children/destroy-loading.js'
import { runChild } from './helpers/child.js'

describe('no handle outlives its stream: the process exits by itself', () => {
  for (const isolation of ['inline', 'worker']) {
    it(`after destroying the composed stream mid-way (${isolation})`, async () => {
      const { code, stdout, timedOut } = await runChild('destroy-midway', ['upper.wasm', isolation], 20_000)
      assert.equal(timedOut, false, 'the child process hung after destroy()')
      assert.equal(code, 0)
      const result = JSON.parse(stdout)
      assert.equal(result.err, 'ERR_STREAM_PREMATURE_CLOSE', 'the pipeline is told the stream closed early')
      assert.ok(result.consumed >= 50 && result.consumed < 100, `stopped soon after destroy (consumed ${result.consumed})`)
    })

    it(`after hostile guests, with a healthy pipeline afterwards (${isolation})`, async () => {
      const { code, stdout, timedOut } = await runChild('hostile-then-exit', [isolation], 20_000)
      assert.equal(timedOut, false, 'the child process did not exit by itself')
      assert.equal(code, 0)
      const expected = isolation === 'worker' ? ['ERR_WASM_TIMEOUT', 'ERR_WASM_TRAP', 'STILL HEALTHY'] : ['ERR_WASM_TRAP', 'STILL HEALTHY']
      assert.deepEqual(JSON.parse(stdout), expected)
    })
  }

  for (const pool of ['one worker', 'pool']) {
    it(`after a worker stream's output stops being read with chunks in the worker (${pool})`, async () => {
      const { code, stdout, timedOut } = await runChild('stalled-consumer', ['abandon', pool === 'pool' ? 'pool' : ''], 20_000)
      assert.equal(timedOut, false, 'a worker waiting for the consumer kept the process alive')
      assert.equal(code, 0)
      const { stalled } = JSON.parse(stdout) as { stalled: number }
      assert.ok(stalled > 0 && stalled < 200, `the writer was held back (wrote ${stalled} of 200 pieces)`)
    })

    it(`a stalled worker stream read again later delivers everything (${pool})`, async () => {
      const { code, stdout, timedOut } = await runChild('stalled-consumer', ['read-later', pool === 'pool' ? 'pool' : ''], 20_000)
      assert.equal(timedOut, false)
      assert.equal(code, 0)
      const { stalled, bytes, upper } = JSON.parse(stdout) as { stalled: number; bytes: number; upper: boolean }
      assert.ok(stalled < 200, `the writer was held back (wrote ${stalled} of 200 pieces)`)
      assert.equal(bytes, 200 * 64 * 1024)
      assert.equal(upper, true)
    })
  }

  it('a stream paused for its consumer whose guest still runs reports that guest timing out before the process exits', async () => {
    const { code, stdout, timedOut } = await runChild('paused-timeout', [], 20_000)
    assert.equal(timedOut, false)
    assert.equal(code, 0)
    assert.deepEqual(JSON.parse(stdout || '{}'), { error: 'ERR_WASM_TIMEOUT' }, 'the process exited before the timeout was reported')
  })

  it('after a worker stream is abandoned without end or destroy', async () => {
    const { code, stdout, timedOut } = await runChild('abandoned', [], 20_000)
    assert.equal(timedOut, false, 'an idle worker kept the process alive')
    assert.equal(code, 0)
    assert.equal(stdout.trim(), 'ABANDONED')
  })
})

describe('destroy', () => {
  it('destroy() reaches every stage, is idempotent, and emits close once', async () => {
    const stream = wasmTransform(example('upper.wasm'))
    let closes = 0
    stream.on('close', () => closes++)
    stream.write(Buffer.from('abc'))
    stream.destroy()
    stream.destroy()
    await new Promise((resolve) => setTimeout(resolve, 20))
    assert.equal(closes, 1)
    for (const stage of stream.stages) assert.ok((stage as Duplex).destroyed)
  })

  it('destroy(err) emits that error and no end', async () => {
    const stream = wasmTransform(example('upper.wasm'))
    const seen: string[] = []
    stream.on('error', (e) => seen.push(`error:${e.message}`))
    stream.on('end', () => seen.push('end'))
    stream.on('close', () => seen.push('close'))
    stream.destroy(new Error('boom'))
    await new Promise((resolve) => setTimeout(resolve, 20))
    assert.deepEqual(seen, ['error:boom', 'close'])
  })

  /** The bundle's 'error', 'end', 'finish' and 'close', in order. */
  function track(stream: Duplex): string[] {
    const seen: string[] = []
    stream.on('error', (e: Error) => seen.push(`error:${e.message}`))
    for (const event of ['end', 'finish', 'close']) stream.on(event, () => seen.push(event))
    return seen
  }
  /** Resolves 50 ms after the stream's coming 'close': anything late would have come by then. */
  const settle = (stream: Duplex): Promise<void> =>
    new Promise((resolve) => stream.once('close', () => setTimeout(resolve, 50)))

  // After destroy(err): 'error', then 'close', and never 'end', 'finish' or 'data'. The bundle's
  // readable-stream 3 (under duplexify) does not check that it was destroyed before emitting them.
  for (const isolation of ['inline', 'worker'] as const) {
    it(`destroy(err) right after end() emits no 'finish' after 'close' (${isolation})`, async () => {
      // pipeline() counts the last stage, ended with nothing buffered, as done when destroyed:
      // its callback ran as on success and uncorked the bundle, releasing the held 'finish'.
      const stream = wasmTransform(example('upper.wasm'), { isolation })
      const seen = track(stream)
      stream.resume()
      stream.end()
      stream.destroy(new Error('boom'))
      await settle(stream)
      assert.deepEqual(seen, ['error:boom', 'close'])
    })

    it(`destroy(err) with the output and its end buffered emits neither after 'close', read or not (${isolation})`, async () => {
      const stream = wasmTransform(example('upper.wasm'), { isolation })
      const seen = track(stream)
      stream.pause()
      stream.on('data', (chunk: Buffer) => seen.push(`data:${chunk}`))
      stream.end(Buffer.from('abc'))
      await new Promise((resolve) => stream.once('finish', resolve))
      await new Promise((resolve) => setImmediate(resolve))
      assert.equal(stream.readableLength, 3, 'the output waits in the bundle')
      assert.equal((stream.stages.at(-1) as Duplex).readableEnded, true, 'and its end: the last stage has ended')
      stream.destroy(new Error('boom'))
      stream.once('close', () => stream.resume())
      await settle(stream)
      assert.deepEqual(seen, ['finish', 'error:boom', 'close'])
    })

    it(`destroy(err) as the last stage ends does not pass its end on after 'close' (${isolation})`, async () => {
      // The last stage's 'end' is already queued when it is destroyed (without an error, by the
      // bundle's 'close'), so it still comes, and duplexify pushed it on to the destroyed bundle.
      const stream = wasmTransform(example('upper.wasm'), { isolation })
      const seen = track(stream)
      stream.on('data', (chunk: Buffer) => seen.push(`data:${chunk}`))
      ;(stream.stages.at(-1) as Duplex).once('prefinish', () => stream.destroy(new Error('boom')))
      stream.end(Buffer.from('abc'))
      await settle(stream)
      assert.deepEqual(seen, ['data:ABC', 'error:boom', 'close'])
    })
  }

  for (const isolation of ['inline', 'worker'] as const) {
    it(`a stream that succeeds closes once its sides are done, as Node's own do (${isolation})`, async () => {
      // duplexify, under the bundle, never closed a stream that succeeded: 'close' never came.
      const stream = wasmTransform(example('upper.wasm'), { isolation })
      const events: string[] = []
      for (const event of ['end', 'finish', 'close', 'error']) stream.on(event, () => events.push(event))
      const closed = new Promise((resolve, reject) => {
        stream.once('close', resolve)
        setTimeout(() => reject(new Error(`no 'close' after ${events.join(', ')}`)), 2000).unref()
      })
      stream.resume()
      stream.end(Buffer.from('abc'))
      await closed
      await new Promise((resolve) => setTimeout(resolve, 50))
      assert.deepEqual([...events].sort(), ['close', 'end', 'finish'])
      assert.equal(events.at(-1), 'close')
      assert.equal(stream.destroyed, true)
    })
  }

  describe('end(cb) calls back once: on finish, or on failure with its error (as on Node streams)', () => {
    const ended = (stream: Duplex, ...args: unknown[]): Promise<Array<Error | null | undefined>> =>
      new Promise((resolve) => {
        const calls: Array<Error | null | undefined> = []
        ;(stream.end as (...a: unknown[]) => void)(...args, (err?: Error | null) => calls.push(err))
        setTimeout(() => resolve(calls), 100)
      })

    it('on finish, with nothing', async () => {
      const stream = wasmTransform(example('upper.wasm'), { isolation: 'inline' })
      stream.resume()
      assert.deepEqual(await ended(stream, Buffer.from('abc')), [undefined])
    })

    it('already finished: ERR_STREAM_ALREADY_FINISHED, and no listener left behind', async () => {
      const stream = wasmTransform(example('upper.wasm'), { isolation: 'inline' })
      stream.resume()
      assert.deepEqual(await ended(stream, Buffer.from('abc')), [undefined])
      const listeners = stream.listenerCount('finish') + stream.listenerCount('close')
      assert.deepEqual((await ended(stream)).map((e) => (e as { code?: string } | undefined)?.code), ['ERR_STREAM_ALREADY_FINISHED'])
      assert.equal(stream.listenerCount('finish') + stream.listenerCount('close'), listeners)
    })

    it('destroyed with an error before it finished: that error', async () => {
      const stream = wasmTransform(example('upper.wasm'))
      stream.on('error', () => {})
      const calls = ended(stream, Buffer.from('abc'))
      stream.destroy(new Error('boom'))
      const [err, ...more] = await calls
      assert.equal(err?.message, 'boom')
      assert.equal(more.length, 0)
    })

    it('destroyed without one, or already destroyed: ERR_STREAM_DESTROYED', async () => {
      const stream = wasmTransform(example('upper.wasm'))
      const calls = ended(stream)
      stream.destroy()
      assert.deepEqual((await calls).map((e) => (e as { code?: string } | undefined)?.code), ['ERR_STREAM_DESTROYED'])
      assert.deepEqual((await ended(stream)).map((e) => (e as { code?: string } | undefined)?.code), ['ERR_STREAM_DESTROYED'])
    })
  })

  it('destroy while the guest is still loading does not leak or throw', async () => {
    const { code, stdout, timedOut } = await runChild('destroy-loading', [], 20_000)
    assert.equal(timedOut, false, 'the child process did not exit by itself')
    assert.equal(code, 0, 'nothing threw')
    const { streams, workers } = JSON.parse(stdout) as { streams: Seen[]; workers: { started: number; exited: number } }
    assert.equal(streams.length, 20)
    for (const [i, s] of streams.entries()) {
      const which = `stream ${i}, destroyed while ${s.when} ${s.destroyedWith === null ? 'without' : 'with'} an error`
      assert.deepEqual(s.errors, s.destroyedWith === null ? [] : [s.destroyedWith], `${which}: 'error' once with its error, or never`)
      assert.equal(s.ends, 0, `${which}: no 'end'`)
      assert.equal(s.closes, 1, `${which}: 'close' once`)
      assert.equal(s.data, 0, `${which}: no 'data'`)
    }
    assert.equal(workers.exited, workers.started, `every worker started exited (${workers.exited} of ${workers.started})`)
    assert.equal(workers.started, 10, 'one worker for each stream destroyed while starting, none for those destroyed while loading')
  })
})
