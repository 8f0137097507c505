/**
 * Run as a child process by destroy.test.ts: a stream that is written to and then abandoned,
 * never ended nor destroyed. An idle worker must not keep the process alive.
 */
import { wasmTransform } from '../../lib/index.js'
import { example } from '../helpers/reference.js'

const stream = wasmTransform(example('upper.wasm'), { isolation: 'worker', bufferSize: 9 })
stream.once('data', (chunk: Buffer) => process.stdout.write(chunk.toString() + '\n'))
stream.write(Buffer.from('abandoned'))
