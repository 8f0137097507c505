/** The CLI's `-o` output: a temporary file, renamed over the target only on commit. */
import assert from 'node:assert/strict'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { openOutput } from '../lib/cli/output.js'
import { tempDir } from './helpers/temp.js'

describe('openOutput (-o)', () => {
  it('discard after the pipeline destroyed the stream with an error under a write in flight removes the temporary file', async (t) => {
    const dir = tempDir(t, 'output-')
    const target = join(dir, 'out.txt')
    writeFileSync(target, 'old\n')
    const output = await openOutput(target)
    output.stream.on('error', () => {}) // pipeline's own listener, as in runStream
    // A full batch (4 MiB) goes out at once: a writev is now in the thread pool.
    output.stream.write(Buffer.alloc(4 * 1024 * 1024, 120))
    // The guest traps: pipeline destroys the output with the error, and rejects before its 'close'.
    output.stream.destroy(new Error('guest trapped'))
    await output.discard()
    assert.deepEqual(readdirSync(dir), ['out.txt'], 'no temporary file left beside the target')
    assert.equal(readFileSync(target, 'utf8'), 'old\n')
  })
})
