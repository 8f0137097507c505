/**
 * Run as a child process by workers.test.ts: a sandbox whose every worker is busy in a guest
 * call that never returns, with more streams waiting, all destroyed at once. No worker may be
 * left and the process must exit by itself.
 */
import { createSandbox } from '../../lib/index.js'
import { example, fixture } from '../helpers/reference.js'

const sandbox = createSandbox({ maxWorkers: 2, limits: { timeout: 60_000 } })
// A clean call first: its worker stays idle in the pool, which must not hold the process either.
await sandbox.call(example('upper.wasm'), 'warm')
const processor = sandbox.createStreamProcessor(fixture('loop-process.wasm'))
const streams = Array.from({ length: 4 }, () => processor.stream())
let running = 0
for (const stream of streams) {
  stream.on('error', () => {})
  stream.once('data', () => running++)
  stream.write(Buffer.from('x'))
}
while (running < 2) await new Promise((resolve) => setTimeout(resolve, 5))
const busy = sandbox.workers()
for (const stream of streams) stream.destroy()
await new Promise((resolve) => setTimeout(resolve, 50))
process.stdout.write(JSON.stringify({ busy, after: sandbox.workers() }))
