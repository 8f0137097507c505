/**
 * Run as a child process by loader.test.ts: a big module's load is stopped by limits.loadTimeout,
 * a hostile module whose parse needs more heap than the loader thread has is stopped by it, and
 * an invalid big module is refused; after each, a fresh stream runs and the big module loads.
 * Prints what happened and how many threads were started and had exited, and the test passes
 * only if the process then exits by itself: no loader thread may keep it alive.
 */
import type { Worker } from 'node:worker_threads'
import { loadGuest, wasmTransform, type WasmSandboxError } from '../../lib/index.js'
import { LOADER_LIMITS, loaderThreads } from '../../lib/runners/loader-threads.js'
import { bigModule } from '../helpers/big-module.js'
import { example } from '../helpers/reference.js'
import { run } from '../helpers/streams.js'

const threads = { started: 0, exited: 0 }
process.on('worker', (worker: Worker) => {
  threads.started++
  worker.once('exit', () => threads.exited++)
})

const seen: Record<string, unknown> = {}
const codeOf = (err: unknown): string => `${(err as WasmSandboxError).code}: ${(err as Error).message}`
/** Waits until `threads` have exited, up to 5 s (an ended thread may finish a native call first). */
async function exited(count: number): Promise<number> {
  for (let waited = 0; threads.exited < count && waited < 5000; waited += 10) await new Promise((resolve) => setTimeout(resolve, 10))
  return threads.exited
}

/** How a stream over `module` ends: its output, or its error's code and message. */
async function outcome(module: Uint8Array | string, options: { loadTimeout?: number; isolation?: 'inline' } = {}): Promise<string> {
  const { loadTimeout, isolation } = options
  try {
    return (await run(wasmTransform(module, { limits: loadTimeout ? { loadTimeout } : {}, ...(isolation ? { isolation } : {}) }), Buffer.from('still healthy'))).toString()
  } catch (err) {
    return codeOf(err)
  }
}

const big = bigModule({ bytes: 16_000_000 }).bytes

// Over its time limit: the thread is ended, and the next load gets a fresh one.
seen.timeout = await outcome(big, { loadTimeout: 50 })
seen.threadsAfterTimeout = { alive: loaderThreads.size, exited: await exited(1) }
// Inline, so that the only threads so far are loader threads.
seen.upperAfterTimeout = await outcome(example('upper.wasm'), { isolation: 'inline' })

// A type section of 1.5 million empty function types: 4.5 MB, about 170 MB of parsed objects.
LOADER_LIMITS.heapMb = 32
const count = 1_500_000
const types = Buffer.alloc(3 * count, Buffer.from([0x60, 0, 0]))
const countLeb = [0x80 | (count & 0x7f), 0x80 | ((count >> 7) & 0x7f), count >> 14]
const sectionLength = countLeb.length + types.length
const hostile = Buffer.concat([
  Buffer.from([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 1, 0x80 | (sectionLength & 0x7f), 0x80 | ((sectionLength >> 7) & 0x7f), 0x80 | ((sectionLength >> 14) & 0x7f), sectionLength >> 21]),
  Buffer.from(countLeb),
  types,
])
seen.heap = await loadGuest(hostile).then(
  () => 'loaded',
  (err: unknown) => codeOf(err),
)
LOADER_LIMITS.heapMb = 256
seen.threadsAfterHeap = { alive: loaderThreads.size, exited: await exited(2) }

// An invalid module fails typed in a healthy thread, which is kept for the next load.
const invalid = Buffer.from(big.subarray(0, 1_000_000))
seen.invalid = await loadGuest(invalid).then(
  () => 'loaded',
  (err: unknown) => codeOf(err),
)
seen.threadsAfterInvalid = { alive: loaderThreads.size, exited: threads.exited }

seen.bigAfter = await outcome(big)
seen.upperAfter = await outcome(example('upper.wasm'))
process.on('exit', () => process.stdout.write(JSON.stringify({ ...seen, threads }) + '\n'))
