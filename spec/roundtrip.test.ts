import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import fc from 'fast-check'
import { wasmTransform, type SandboxOptions } from '../lib/index.js'
import { example, grepRef, numbererRef, passRef, upperRef, wcRef } from './helpers/reference.js'
import { randomBytes, randomLines, run } from './helpers/streams.js'

const BUFFER = 4096

interface Case {
  guest: string
  ref: (input: Buffer) => Buffer
  options?: SandboxOptions
  text?: boolean
}

const cases: Case[] = [
  { guest: 'pass', ref: passRef },
  { guest: 'upper', ref: upperRef },
  { guest: 'grep', ref: (b) => grepRef(b), options: { delimiter: '\n' }, text: true },
  { guest: 'wc', ref: wcRef },
  { guest: 'numberer', ref: numbererRef },
]

function inputOf(c: Case, length: number, seed: number): Buffer {
  return c.text ? randomLines(length, seed) : randomBytes(length, seed)
}

describe('round trips through the example guests', () => {
  for (const c of cases) {
    describe(c.guest, () => {
      for (const [name, length] of [
        ['0 bytes', 0],
        ['1 byte', 1],
        ['exactly one buffer', BUFFER],
        ['one byte over a buffer', BUFFER + 1],
        ['several MiB', 3 * 1024 * 1024 + 123],
      ] as const) {
        it(`${name} matches the JS reference byte for byte`, async () => {
          const input = inputOf(c, length, length + 1)
          const output = await run(
            wasmTransform(example(`${c.guest}.wasm`), { bufferSize: BUFFER, ...c.options }),
            input,
            [65536, 1000, 7],
          )
          assert.ok(output.equals(c.ref(input)), `${c.guest} output differs for ${name}`)
        })
      }

      it('property: random input split at random boundaries matches the reference', async () => {
        await fc.assert(
          fc.asyncProperty(
            fc.integer({ min: 0, max: 20_000 }),
            fc.integer({ min: 1, max: 1 << 30 }),
            fc.array(fc.integer({ min: 1, max: 9000 }), { minLength: 1, maxLength: 5 }),
            fc.integer({ min: 16, max: 8192 }),
            async (length, seed, sizes, bufferSize) => {
              const input = inputOf(c, length, seed)
              const output = await run(
                wasmTransform(example(`${c.guest}.wasm`), { bufferSize, ...c.options }),
                input,
                sizes,
              )
              assert.ok(output.equals(c.ref(input)))
            },
          ),
          { numRuns: 40 },
        )
      })
    })
  }
})
