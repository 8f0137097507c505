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
