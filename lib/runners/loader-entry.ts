/**
 * A loader thread's side (loader-threads.ts): reads a module file or takes the bytes copied to
 * shared memory, hashes them, and, unless the main thread has the guest cached already, does
 * the rest of the load (`compile`: parse, check the ABI, rewrite, compile) and posts back the
 * compiled module, which threads of one process share without copying its code.
 */
import { parentPort } from 'node:worker_threads'
import { compile, hashOf, readModuleFile } from '../guest/load.js'
import { errorRecord } from './protocol.js'
import type { FromLoader, LoadRequest, ToLoader } from './loader-threads.js'

const port = parentPort!

/** The load between its hash and the main thread's word to go on: one at a time. */
let held: { request: Omit<LoadRequest, 'timeoutMs'>; bytes: Uint8Array; hash: string } | undefined

function post(message: FromLoader): void {
  port.postMessage(message)
}

async function hash(request: Omit<LoadRequest, 'timeoutMs'>): Promise<void> {
  const { input, name, maxModuleSize } = request
  const bytes = 'path' in input ? await readModuleFile(input.path, name, maxModuleSize) : new Uint8Array(input.shared)
  const hash = hashOf(bytes)
  held = { request, bytes, hash }
  post({ type: 'hashed', hash })
}

async function finish(): Promise<void> {
  const { request, bytes, hash } = held!
  held = undefined
  const guest = await compile(bytes, request.name, { memoryLimit: request.memoryLimit }, hash)
  post({ type: 'loaded', guest })
}

port.on('message', (message: ToLoader) => {
  const step = message.type === 'load' ? hash(message.request) : message.type === 'compile' ? finish() : ((held = undefined), Promise.resolve())
  step.catch((err: unknown) => post({ type: 'failed', error: errorRecord(err) }))
})
