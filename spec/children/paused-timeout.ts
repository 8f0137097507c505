/**
 * Run as a child process by destroy.test.ts: a stream whose output nobody reads, whose guest then
 * loops on its second chunk. The stream is paused for its consumer, but the guest still runs:
 * limits.timeout must fail it, and the process must not exit before saying so.
 */
import { wasmTransform } from '../../lib/index.js'
import { fixture } from '../helpers/reference.js'

const stream = wasmTransform(fixture('emit-then-loop.wasm'), { limits: { timeout: 300 }, bufferSize: 1024 })
stream.on('error', (err: Error & { code?: string }) => process.stdout.write(JSON.stringify({ error: err.code })))
stream.write(Buffer.alloc(1024, 'a'))
stream.write(Buffer.alloc(1024, '!'))
stream.end()
