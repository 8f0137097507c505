/**
 * The machine's own ceiling for a pool: a guest's `process_chunk` called in a loop on plain
 * worker threads, no streams, no rings, no library. What a pool of N instances gains over one
 * can be read against what N bare threads gain over one on the same machine in the same run.
 */
import { Worker } from 'node:worker_threads'

/** Runs in each thread: a fresh instance per run, `chunks` calls on one prefilled chunk. */
const THREAD = `
const { parentPort } = require('node:worker_threads')
parentPort.on('message', ({ module, chunks, chunkBytes, fill }) => {
  const instance = new WebAssembly.Instance(module, { sandbox: { emit() {} } })
  const { alloc, process_chunk, memory } = instance.exports
  const at = alloc(chunkBytes)
  new Uint8Array(memory.buffer, at, chunkBytes).fill(fill)
  for (let i = 0; i < chunks; i++) process_chunk(at, chunkBytes)
  parentPort.postMessage('done')
})
`

export class BareThreads {
  private readonly threads: Worker[]

  constructor(count: number) {
    this.threads = Array.from({ length: count }, () => new Worker(THREAD, { eval: true }))
  }

  /** Seconds for `chunks` calls split evenly over the first `n` threads, all at once. */
  async seconds(module: WebAssembly.Module, n: number, chunks: number, chunkBytes: number, fill: number): Promise<number> {
    const started = performance.now()
    await Promise.all(
      this.threads.slice(0, n).map(
        (thread) =>
          new Promise<void>((resolve, reject) => {
            const failed = (err: Error): void => {
              thread.off('message', done)
              reject(err)
            }
            const done = (): void => {
              thread.off('error', failed)
              resolve()
            }
            thread.once('message', done)
            thread.once('error', failed)
            thread.postMessage({ module, chunks: Math.round(chunks / n), chunkBytes, fill })
          }),
      ),
    )
    return (performance.now() - started) / 1000
  }

  async close(): Promise<void> {
    await Promise.all(this.threads.map((thread) => thread.terminate()))
  }
}
