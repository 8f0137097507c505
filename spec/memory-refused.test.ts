/**
 * A refused memory.grow is ERR_WASM_MEMORY_LIMIT whatever the guest does next (trap, non-zero
 * status, sandbox.fail, NULL from alloc, a WASI exit), even far below the cap, as an allocator
 * asking for 16 MiB steps is refused at 48 MiB of a 64 MiB limit. A refusal the guest handles is
 * no error, and it explains nothing in a later call. Known for certain through the memory.grow
 * hook (lib/guest/grow-hook.ts); the old guess (a trap within a page of the cap) would call
 * each of these a trap.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import wabtInit from 'wabt'
import { createSandbox, wasmTransform, type Isolation, type SandboxOptions, type WasmSandboxError } from '../lib/index.js'
import { fixture, readFixture } from './helpers/reference.js'
import { run } from './helpers/streams.js'

const MiB = 1024 * 1024
const LIMIT = 64 * MiB
/** From 2 pages in steps of 256, the step from 770 pages (48 MiB + 128 KiB) to 1026 is refused. */
const AT = 770 * 65536
const STEP = 256 * 65536

async function failure(module: string | Buffer | WebAssembly.Module, options: SandboxOptions, input: string, sizes?: number[]): Promise<WasmSandboxError> {
  return run(wasmTransform(module, options), Buffer.from(input), sizes).then(
    (out) => assert.fail(`expected a failure, got ${JSON.stringify(out.toString())}`),
    (err: WasmSandboxError) => err,
  )
}

/** The error is the limit, naming the limit, the size asked for and what the guest did. */
function assertRefused(err: WasmSandboxError, exportName: string, then: RegExp): void {
  assert.equal(err.name, 'WasmSandboxError', String(err?.stack ?? err))
  assert.equal(err.code, 'ERR_WASM_MEMORY_LIMIT', err.message)
  assert.equal(err.exportName, exportName)
  assert.ok(err.message.includes(`memory limit of ${LIMIT} bytes`), err.message)
  assert.ok(err.message.includes(`asked for ${STEP} bytes more at ${AT} bytes (${AT + STEP} in all)`), err.message)
  assert.match(err.message, then)
  assert.match(err.message, /Raise limits\.memory/)
}

for (const isolation of ['inline', 'worker'] as Isolation[]) {
  describe(`a refused memory.grow (${isolation})`, () => {
    const options: SandboxOptions = { isolation, bufferSize: 4, limits: { memory: LIMIT } }

    it('then unreachable (abort() after a failed malloc): ERR_WASM_MEMORY_LIMIT, far below the cap', async () => {
      assertRefused(await failure(fixture('grow-steps.wasm'), options, 'T'), 'process_chunk', /then the guest trapped: unreachable\./)
    })

    it('then a non-zero status: ERR_WASM_MEMORY_LIMIT with the status', async () => {
      const err = await failure(fixture('grow-steps.wasm'), options, 'S')
      assertRefused(err, 'process_chunk', /then the guest returned status 1\./)
      assert.equal(err.status, 1)
    })

    it('then sandbox.fail and a status: ERR_WASM_MEMORY_LIMIT with the message', async () => {
      const err = await failure(fixture('grow-steps.wasm'), options, 'F')
      assertRefused(err, 'process_chunk', /then the guest returned status 2 \(sandbox\.fail: "out of memory"\)\./)
      assert.equal(err.status, 2)
    })

    it('then NULL from alloc: ERR_WASM_MEMORY_LIMIT in alloc, before any input is copied', async () => {
      const err = await failure(fixture('grow-steps.wasm'), { ...options, bufferSize: 4 * MiB }, 'x'.repeat(4 * MiB))
      assertRefused(err, 'alloc', /then the guest returned 0 from alloc\./)
    })

    it('handled by the guest: no error; and it explains nothing in a later call', async () => {
      const oneByte = { ...options, bufferSize: 1 }
      assert.equal((await run(wasmTransform(fixture('grow-steps.wasm'), oneByte), Buffer.from('HH'), [1])).toString(), 'okok')
      // The second chunk traps without growing: a trap, not the limit, though the first chunk's grow was refused.
      const err = await failure(fixture('grow-steps.wasm'), oneByte, 'HU', [1])
      assert.equal(err.code, 'ERR_WASM_TRAP', err.message)
      assert.equal(err.offset, 1)
    })

    it('an imported env.memory', async () => {
      assertRefused(await failure(fixture('grow-steps-imported.wasm'), options, 'x'), 'process_chunk', /trapped: unreachable/)
    })

    it('a WASI reactor (an ABI v1 guest built with wasi-libc)', async () => {
      assertRefused(await failure(fixture('wasi-reactor-grow.wasm'), options, 'x'), 'process_chunk', /trapped: unreachable/)
    })

    it('refused by the module\'s own maximum, below the cap: says so, and not to raise limits.memory', async () => {
      const wabt = await wabtInit()
      const source = readFixture('grow-steps.wat').toString().replace('(memory (export "memory") 2)', '(memory (export "memory") 2 300)')
      const m = wabt.parseWat('grow-steps-300.wat', source)
      m.resolveNames()
      const bytes = Buffer.from(m.toBinary({}).buffer)
      m.destroy()
      const err = await failure(bytes, options, 'T')
      assert.equal(err.code, 'ERR_WASM_MEMORY_LIMIT', err.message)
      assert.ok(err.message.includes(`asked for ${STEP} bytes more at ${258 * 65536} bytes`), err.message)
      assert.match(err.message, /within limits\.memory \(67108864 bytes\), and was refused by the module's own declared maximum/)
      assert.doesNotMatch(err.message, /Raise limits\.memory/)
    })

  })
}

describe('a refused memory.grow in a pool and in WASI programs', () => {
  it('sandbox.call on a pool of workers', async () => {
    const sandbox = createSandbox({ maxWorkers: 2, limits: { memory: LIMIT } })
    try {
      const results = await Promise.allSettled([sandbox.call(fixture('grow-steps.wasm'), 'T'), sandbox.call(fixture('grow-steps.wasm'), 'H')])
      assert.equal(results[0].status, 'rejected')
      assertRefused((results[0] as PromiseRejectedResult).reason, 'process_chunk', /trapped: unreachable/)
      assert.deepEqual(results[1], { status: 'fulfilled', value: Buffer.from('ok') })
    } finally {
      await sandbox.close()
    }
  })

  const wasi = { limits: { memory: LIMIT } }

  it('a WASI command exiting 1 after malloc failed: ERR_WASM_MEMORY_LIMIT with the exit code', async () => {
    const err = await failure(fixture('wasi-grow.wasm'), wasi, 'E')
    assertRefused(err, '_start', /then the guest exited with code 1\./)
    assert.equal(err.exitCode, 1)
  })

  it('a WASI command trapping after it (abort()): ERR_WASM_MEMORY_LIMIT', async () => {
    assertRefused(await failure(fixture('wasi-grow.wasm'), wasi, 'T'), '_start', /trapped: unreachable/)
  })

  it('a WASI command that carries on: its output, no error', async () => {
    assert.equal((await run(wasmTransform(fixture('wasi-grow.wasm'), wasi), Buffer.from('H'))).toString(), 'ok\n')
  })

  it('per record: each run is a fresh instance; the record that exits after a refusal is the limit', async () => {
    const options: SandboxOptions = { ...wasi, wasi: { mode: 'record' }, delimiter: '\n' }
    const err = await failure(fixture('wasi-grow.wasm'), options, 'H\nH\nE\nH\n')
    assertRefused(err, '_start', /exited with code 1/)
    assert.equal(err.offset, 4)
  })
})
