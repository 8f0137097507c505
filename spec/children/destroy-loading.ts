/**
 * Run as a child process by destroy.test.ts: destroys streams before their guest runs, then does
 * nothing else. Ten are destroyed at once, while the module is still loading on the main thread;
 * ten, one at a time, as soon as their worker thread is online and theirs, while the guest is
 * still starting in it. Every other one is destroyed with an error. At exit it prints what each
 * stream emitted and how many workers were started and how many exited. The test passes only if
 * this process exits by itself.
 */
import type { Worker } from 'node:worker_threads'
import { wasmTransform } from '../../lib/index.js'
import { example } from '../helpers/reference.js'

export interface Seen {
  when: 'loading' | 'starting'
  /** The message of the error the stream was destroyed with, if any. */
  destroyedWith: string | null
  errors: string[]
  ends: number
  closes: number
  data: number
}

const streams: Seen[] = []
const workers = { started: 0, exited: 0 }
process.on('worker', (worker: Worker) => {
  workers.started++
  worker.once('exit', () => workers.exited++)
})
process.on('exit', () => process.stdout.write(JSON.stringify({ streams, workers }) + '\n'))

/** A new stream, its events counted; returns the function that destroys it. */
function watched(when: Seen['when'], i: number): () => void {
  const stream = wasmTransform(example('upper.wasm'))
  const seen: Seen = { when, destroyedWith: i % 2 === 1 ? `stop ${when} ${i}` : null, errors: [], ends: 0, closes: 0, data: 0 }
  streams.push(seen)
  stream.on('error', (err: Error) => seen.errors.push(err.message))
  stream.on('end', () => seen.ends++)
  stream.on('close', () => seen.closes++)
  stream.on('data', () => seen.data++)
  return () => stream.destroy(seen.destroyedWith === null ? undefined : new Error(seen.destroyedWith))
}

for (let i = 0; i < 10; i++) watched('loading', i)()

for (let i = 0; i < 10; i++) {
  const destroy = watched('starting', i)
  // 'worker' comes a tick after the thread is created; the pool hands the thread to the stream
  // when it is online (its listener runs before ours), long before the guest in it is ready.
  const worker = await new Promise<Worker>((resolve) => process.once('worker', resolve))
  await new Promise((resolve) => worker.once('online', resolve))
  destroy()
}
