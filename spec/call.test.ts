/**
 * sandbox.call() runs through the same stages and runners as a stream: every failure kind
 * rejects with its typed error in both isolations, never resolves with empty output.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { createSandbox, type Isolation, type WasmSandboxErrorCode } from '../lib/index.js'
import { example, fixture, upperRef } from './helpers/reference.js'

const failures: Array<{ name: string; module: string; input: string; code: WasmSandboxErrorCode; workerOnly?: boolean }> = [
  { name: 'a trap', module: 'unreachable.wasm', input: 'x', code: 'ERR_WASM_TRAP' },
  { name: 'sandbox.fail()', module: 'fail-on-bang.wasm', input: 'a!b', code: 'ERR_WASM_GUEST_ERROR' },
  { name: 'a non-zero status', module: 'fail-status.wasm', input: 'x', code: 'ERR_WASM_GUEST_ERROR' },
  { name: 'an output bomb', module: 'output-bomb.wasm', input: 'x', code: 'ERR_WASM_OUTPUT_LIMIT' },
  { name: 'a failing init', module: 'init-fails.wasm', input: 'x', code: 'ERR_WASM_GUEST_ERROR' },
  { name: 'an endless loop', module: 'loop-process.wasm', input: 'x', code: 'ERR_WASM_TIMEOUT', workerOnly: true },
]

for (const isolation of ['inline', 'worker'] as Isolation[]) {
  describe(`sandbox.call() (${isolation})`, () => {
    const sandbox = createSandbox({ isolation, limits: { timeout: 300 } })

    it('returns the whole output, flush included', async () => {
      const input = 'hello, call\n'.repeat(10_000)
      assert.deepEqual(await sandbox.call(example('upper.wasm'), input), upperRef(Buffer.from(input)))
      assert.equal((await sandbox.call(fixture('flush-emits.wasm'), 'x')).toString(), 'done\n')
      assert.equal((await sandbox.call(fixture('flush-emits.wasm'), '')).toString(), 'done\n')
    })

    for (const f of failures) {
      if (f.workerOnly && isolation === 'inline') continue
      it(`rejects on ${f.name} with ${f.code}`, async () => {
        await assert.rejects(sandbox.call(fixture(f.module), f.input), (err: { code: string; name: string }) => {
          assert.equal(err.name, 'WasmSandboxError')
          assert.equal(err.code, f.code)
          return true
        })
      })
    }

    it('honours recoveryStrategy: skip (the chunk is dropped, flush still runs)', async () => {
      const skipping = createSandbox({ isolation, recoveryStrategy: 'skip' })
      assert.equal((await skipping.call(fixture('fail-on-bang.wasm'), 'a!b')).length, 0)
    })
  })
}

describe('sandbox.call() arguments', () => {
  it('an input that is not bytes or text, or an unknown call option, is a typed error', async () => {
    // A null input was a raw TypeError; a { timeout } here was silently ignored (limits are the sandbox's).
    const sandbox = createSandbox()
    for (const bad of [null, 42, [1, 2], {}]) {
      await assert.rejects(sandbox.call(example('upper.wasm'), bad as never), { code: 'ERR_WASM_INVALID_OPTION', message: /input must be/ })
    }
    await assert.rejects(sandbox.call(example('upper.wasm'), 'x', { timeout: 1 } as never), { code: 'ERR_WASM_INVALID_OPTION', message: /timeout/ })
    assert.deepEqual(await sandbox.call(example('upper.wasm'), new Uint8Array([0x61])), Buffer.from('A'))
  })
})
