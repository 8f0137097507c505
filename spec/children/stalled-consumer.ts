/**
 * Run as a child process by destroy.test.ts: a worker stream written until it pushes back, whose
 * output nobody reads. `abandon`: nothing else happens, and the process must exit by itself, as
 * it does with a native Transform. `read-later`: the output is read after a pause (a timer holds
 * the process meanwhile) and must arrive whole: the worker holds the process again once read.
 */
import { wasmTransform } from '../../lib/index.js'
import { example } from '../helpers/reference.js'

const [mode, pool] = process.argv.slice(2)
const stream = wasmTransform(example('upper.wasm'), pool === 'pool' ? { maxConcurrency: 2, stateless: true } : {})
const piece = Buffer.alloc(64 * 1024, 'a')
const pieces = 200
let written = 0
const write = (): void => {
  while (written < pieces) {
    written++
    if (!stream.write(piece)) {
      stream.once('drain', write)
      return
    }
  }
  stream.end()
}
write()
let stalled = 0
setTimeout(() => {
  stalled = written
  if (mode !== 'read-later') return
  let bytes = 0
  let upper = true
  stream.on('data', (chunk: Buffer) => {
    bytes += chunk.length
    upper &&= chunk.every((b) => b === 0x41)
  })
  stream.on('end', () => process.stdout.write(JSON.stringify({ stalled, bytes, upper })))
}, 300)
process.on('exit', () => {
  if (mode === 'abandon') process.stdout.write(JSON.stringify({ stalled: written }))
})
