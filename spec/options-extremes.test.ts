/**
 * Every option set validation accepts either works or fails as a typed error on the stream:
 * never an uncaught exception, never a hang. Sizes are drawn from the whole accepted range,
 * with the extremes that once overflowed the worker's ring arithmetic always included.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import fc from 'fast-check'
import { BackpressureGate, createSandbox, wasmTransform, type SandboxOptions } from '../lib/index.js'
import { example } from './helpers/reference.js'
import { run } from './helpers/streams.js'

const GiB = 1024 ** 3
const MiB = 1024 ** 2
const input = Buffer.from('hello\nworld\n')

/** The output, or the code of the typed error the stream failed with. */
async function outcome(options: SandboxOptions): Promise<string> {
  try {
    const out = await run(wasmTransform(example('pass.wasm'), options), input, [5])
    // A lossy strategy may shed chunks under pressure; what passes is still in order.
    if ((options.backpressure ?? 'block') === 'block') assert.deepEqual(out, input)
    else assert.ok(out.length <= input.length)
    return 'ok'
  } catch (err) {
    assert.equal((err as Error).name, 'WasmSandboxError', String((err as Error).stack))
    return (err as { code: string }).code
  }
}

describe('accepted options never crash the host', () => {
  for (const isolation of ['inline', 'worker'] as const) {
    it(`the extremes work (${isolation})`, async () => {
      assert.equal(await outcome({ isolation, bufferSize: GiB, limits: { memory: 4 * GiB } }), 'ok')
      assert.equal(await outcome({ isolation, bufferSize: 64 * MiB, flowControl: { maxInFlight: 40 } }), 'ok')
      assert.equal(await outcome({ isolation, bufferSize: 1, flowControl: { maxInFlight: 1024 }, highWaterMark: 1 }), 'ok')
      assert.equal(await outcome({ isolation, bufferSize: GiB, flowControl: { maxInFlight: 1024 }, highWaterMark: 2 ** 31 - 1, limits: { memory: 4 * GiB } }), 'ok')
      if (isolation === 'worker') {
        assert.equal(await outcome({ isolation, bufferSize: 1, stateless: true, maxConcurrency: 16, flowControl: { maxInFlight: 1024 }, highWaterMark: 1 }), 'ok')
      }
      // A chunk region larger than the memory limit is the guest's memory error, on the stream.
      assert.match(await outcome({ isolation, bufferSize: GiB }), /^ERR_WASM_(TRAP|MEMORY_LIMIT)$/)
    })
  }

  it('a random sample of the accepted range works or fails typed', async () => {
    const size = fc.oneof(fc.constantFrom(1, 4096, 65536, 64 * MiB, GiB), fc.integer({ min: 1, max: GiB }))
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          isolation: fc.constantFrom('inline' as const, 'worker' as const),
          bufferSize: size,
          maxInFlight: fc.integer({ min: 1, max: 1024 }),
          maxConcurrency: fc.integer({ min: 1, max: 4 }),
          highWaterMark: fc.oneof(fc.constant(undefined), fc.integer({ min: 1, max: 2 ** 31 - 1 })),
          backpressure: fc.constantFrom('block' as const, 'drop' as const, 'sample' as const, 'adaptive' as const),
          memory: fc.constantFrom(undefined, 65536, 4 * GiB),
        }),
        async ({ memory, highWaterMark, maxInFlight, maxConcurrency, ...rest }) => {
          const options: SandboxOptions = {
            ...rest,
            flowControl: { maxInFlight },
            // A pool needs worker threads and a stateless guest (pass.wasm keeps nothing).
            ...(rest.isolation === 'worker' ? { maxConcurrency, stateless: true } : {}),
            ...(highWaterMark ? { highWaterMark } : {}),
            ...(memory ? { limits: { memory } } : {}),
          }
          await outcome(options)
        },
      ),
      { numRuns: 40, seed: 20261125 },
    )
  })
})

describe('validation lives in options.ts once', () => {
  const cases: Array<[string, Record<string, unknown>, boolean]> = [
    ['maxDelay 0', { maxDelay: 0 }, true],
    ['maxDelay 60000', { maxDelay: 60_000 }, true],
    ['maxDelay 60001', { maxDelay: 60_001 }, false],
    ['maxDelay 1.5', { maxDelay: 1.5 }, false],
    ['highWaterMark 2^31', { highWaterMark: 2 ** 31 }, false],
    ['lowWaterMark = highWaterMark', { highWaterMark: 100, lowWaterMark: 100 }, true],
    ['unknown key', { hwm: 1 }, false],
  ]
  for (const [name, flowControl, ok] of cases) {
    it(`the gate and createSandbox agree on ${name}`, () => {
      const viaGate = (): unknown => new BackpressureGate({ strategy: 'adaptive', flowControl })
      const viaSandbox = (): unknown => createSandbox({ backpressure: 'adaptive', flowControl })
      for (const attempt of [viaGate, viaSandbox]) {
        if (ok) assert.doesNotThrow(attempt)
        else assert.throws(attempt, { code: 'ERR_WASM_INVALID_OPTION' })
      }
    })
  }
})

describe('chunking options are validated once', () => {
  it('createSandbox and the Chunker agree: a delimiter longer than bufferSize, a maxRecordSize below it', async () => {
    const { Chunker } = await import('../lib/index.js')
    for (const options of [{ bufferSize: 2, delimiter: 'abc' }, { bufferSize: 4096, maxRecordSize: 100 }]) {
      assert.throws(() => createSandbox(options), { code: 'ERR_WASM_INVALID_OPTION' })
      assert.throws(() => new Chunker(options), { code: 'ERR_WASM_INVALID_OPTION' })
    }
    assert.doesNotThrow(() => new Chunker({ bufferSize: GiB }))
  })
})
