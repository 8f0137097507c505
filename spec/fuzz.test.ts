/**
 * Mutated modules: whatever the bytes, the outcome is output or a WasmSandboxError, never a
 * crash, a hang or another exception type. Worker isolation with a short time limit, so a
 * mutation that creates an endless loop is stopped too.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import fc from 'fast-check'
import { createSandbox, WasmSandboxError } from '../lib/index.js'
import { readExample } from './helpers/reference.js'

/** Far past every limit above: a call still unsettled by then hangs, and fails the property with its mutation. */
const HANG_MS = 15_000

function settlesWithin<T>(ms: number, promise: Promise<T>, mutations: unknown): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`hang: no settle within ${ms} ms for mutations ${JSON.stringify(mutations)}`)), ms)
  })
  return Promise.race([promise, hang]).finally(() => clearTimeout(timer))
}

describe('mutated modules', () => {
  // A small output bound too, so a mutation that writes in a loop ends quickly.
  const sandbox = createSandbox({ isolation: 'worker', limits: { timeout: 500, memory: 16 * 1024 * 1024, maxOutputPerChunk: 64 * 1024 } })

  // WASI programs too: the small WAT ones, since a random byte in a C build's code mostly fails validation.
  for (const [name, runs] of [['upper.wasm', 300], ['wc.wasm', 300], ['../spec/fixtures/wasi-cat.wasm', 150], ['../spec/fixtures/wasi-counter.wasm', 150]] as const) {
    const maxLength = name.includes('wasi') ? 1 : 4
    it(`random byte mutations of ${name} succeed or fail with a WasmSandboxError`, async (t) => {
      const original = readExample(name)
      let failures = 0
      let successes = 0
      const codes = new Map<string, number>()
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.tuple(fc.nat({ max: original.length - 1 }), fc.integer({ min: 0, max: 255 })), {
            minLength: 1,
            maxLength,
          }),
          async (mutations) => {
            const bytes = Buffer.from(original)
            for (const [at, value] of mutations) bytes[at] = value
            try {
              const out = await settlesWithin(HANG_MS, sandbox.call(bytes, 'Some input, with words.\nAnd lines.\n'), mutations)
              assert.ok(Buffer.isBuffer(out))
              successes++
            } catch (err) {
              failures++
              const code = (err as WasmSandboxError).code
              codes.set(code, (codes.get(code) ?? 0) + 1)
              assert.ok(err instanceof WasmSandboxError, `not a WasmSandboxError: ${(err as Error)?.stack ?? err}`)
            }
          },
        ),
        { numRuns: runs },
      )
      t.diagnostic(`${successes} ran, ${failures} refused: ${JSON.stringify(Object.fromEntries(codes))}`)
      assert.ok(failures > 0, 'some mutations must have been refused, or the test tests nothing')
      assert.ok(successes > 0, 'some mutations must have run, or no guest code was exercised')
    })
  }
})
