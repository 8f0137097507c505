/**
 * Run as a child process by exit.test.ts: a guest that loops forever is stopped by the time
 * limit, a second pipeline then runs fine, and the process must exit by itself: no worker,
 * timer or handle may be left behind.
 */
import { wasmTransform, type Isolation } from '../../lib/index.js'
import { example, fixture } from '../helpers/reference.js'
import { run } from '../helpers/streams.js'

const isolation = (process.argv[2] ?? 'worker') as Isolation
const results: string[] = []
if (isolation === 'worker') {
  try {
    await run(wasmTransform(fixture('loop-process.wasm'), { isolation, limits: { timeout: 200 } }), Buffer.from('x'))
  } catch (err) {
    results.push((err as { code: string }).code)
  }
}
try {
  await run(wasmTransform(fixture('unreachable.wasm'), { isolation }), Buffer.from('x'))
} catch (err) {
  results.push((err as { code: string }).code)
}
const out = await run(wasmTransform(example('upper.wasm'), { isolation }), Buffer.from('still healthy'))
results.push(out.toString())
process.stdout.write(JSON.stringify(results) + '\n')
