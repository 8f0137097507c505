/**
 * Cancellation: an AbortSignal stops a stream at once, its guest's worker with it, with an
 * AbortError; processFile stopped that way (or by SIGTERM) resumes byte-identically.
 */
import assert from 'node:assert/strict'
import { readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { createSandbox, processFile, wasmTransform } from '../lib/index.js'
import { example, fixture, numbererRef } from './helpers/reference.js'
import { randomLines, run } from './helpers/streams.js'
import { tempDir } from './helpers/temp.js'

const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

function isAbort(reason: unknown) {
  return (err: Error & { code?: string; cause?: unknown }): boolean => {
    assert.equal(err.name, 'AbortError')
    assert.equal(err.code, 'ABORT_ERR')
    assert.equal(err.cause, reason)
    return true
  }
}

describe('AbortSignal', () => {
  it('aborting stops a guest stuck in a call at once, and ends its worker', async () => {
    const controller = new AbortController()
    const sandbox = createSandbox({ maxWorkers: 1, limits: { timeout: 60_000 }, signal: controller.signal })
    const stream = sandbox.createStreamProcessor(fixture('loop-process.wasm')).stream()
    let errors = 0
    stream.on('error', () => errors++)
    stream.write(Buffer.from('x'))
    await new Promise((resolve) => stream.once('data', resolve)) // "running": the guest loops now
    const reason = new Error('user pressed stop')
    const started = performance.now()
    controller.abort(reason)
    await assert.rejects(new Promise((_, reject) => stream.once('error', reject)), isAbort(reason))
    assert.ok(performance.now() - started < 1000, 'not at once')
    const end = Date.now() + 5000
    while (sandbox.workers().live > 0 && Date.now() < end) await delay(10)
    assert.equal(sandbox.workers().live, 0, 'the worker outlived the abort')
    assert.equal(errors, 1)
  })

  it('an already aborted signal fails the stream before any guest starts', async () => {
    const reason = new Error('too late')
    const stream = wasmTransform(example('upper.wasm'), { signal: AbortSignal.abort(reason) })
    await assert.rejects(run(stream, Buffer.from('abc')), isAbort(reason))
  })

  it('a signal already aborted rejects sandbox.call with its AbortError, given to the call or to the sandbox', async () => {
    // The stream was destroyed as it was made: the call rejected with ERR_STREAM_DESTROYED and
    // the AbortError, which nothing listened for, then ended the process.
    const reason = new Error('too late')
    await assert.rejects(createSandbox().call(example('upper.wasm'), 'abc', { signal: AbortSignal.abort(reason) }), isAbort(reason))
    const aborted = createSandbox({ signal: AbortSignal.abort(reason) })
    for (let i = 0; i < 2; i++) await assert.rejects(aborted.call(example('upper.wasm'), 'abc'), isAbort(reason))
    await delay(50) // an 'error' event nobody handles would surface by now, failing this file
  })

  it('sandbox.call takes a signal too', async () => {
    const controller = new AbortController()
    const sandbox = createSandbox({ limits: { timeout: 60_000 } })
    const call = sandbox.call(fixture('loop-process.wasm'), 'x', { signal: controller.signal })
    await delay(200)
    controller.abort('enough')
    await assert.rejects(call, isAbort('enough'))
    assert.throws(() => createSandbox({ signal: 'no' as never }), { code: 'ERR_WASM_INVALID_OPTION' })
    await assert.rejects(sandbox.call(example('upper.wasm'), 'x', { signal: {} as never }), { code: 'ERR_WASM_INVALID_OPTION' })
  })

  it('processFile stopped by its signal leaves output and checkpoints the next run resumes from, byte-identically', async (t) => {
    const dir = tempDir(t, 'wasm-sandbox-abort-')
    const input = join(dir, 'in.txt')
    const output = join(dir, 'out.txt')
    const checkpoints = join(dir, 'ck')
    const bytes = randomLines(16 * 1024 * 1024, 77)
    writeFileSync(input, bytes)
    const controller = new AbortController()
    let saved = 0
    const options = { bufferSize: 16 * 1024, checkpoint: { dir: checkpoints, every: 256 * 1024, onSave: () => ++saved === 3 && controller.abort('stop') } }
    await assert.rejects(processFile(input, output, example('numberer.wasm'), { ...options, signal: controller.signal }), isAbort('stop'))
    assert.ok(readdirSync(checkpoints).some((f) => f.endsWith('.wsck')), 'no checkpoint was left')
    const result = await processFile(input, output, example('numberer.wasm'), options)
    assert.notEqual(result.resumedFrom, undefined, 'the second run did not resume')
    assert.ok(readFileSync(output).equals(numbererRef(bytes)), 'output differs from an uninterrupted run')
  })
})
