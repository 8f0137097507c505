import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { example, fixture, grepRef, repoRoot, upperRef, wcRef } from './helpers/reference.js'

const cli = join(repoRoot, 'dist', 'cli.js')
const demo = example('demo-input.txt')

function wasmSandbox(args: string[], input?: Buffer) {
  return spawnSync(process.execPath, [cli, ...args], { input, encoding: 'buffer', timeout: 20_000 })
}

describe('command-line tool', () => {
  it('pipes a file through a guest to standard output (the README demo)', () => {
    const result = wasmSandbox([example('upper.wasm'), demo])
    assert.equal(result.status, 0, result.stderr.toString())
    assert.deepEqual(result.stdout, upperRef(readFileSync(demo)))
  })

  it('reads standard input, honours --delimiter, and runs inline on request', () => {
    const input = readFileSync(demo)
    const grep = wasmSandbox([example('grep.wasm'), '--delimiter', '\\n', '--inline'], input)
    assert.equal(grep.status, 0, grep.stderr.toString())
    assert.deepEqual(grep.stdout, grepRef(input))
    const wc = wasmSandbox([example('wc.wasm'), '-'], input)
    assert.deepEqual(wc.stdout, wcRef(input))
  })

  it('exits 1 with the error code on a guest failure, within the time limit', () => {
    const result = wasmSandbox([fixture('loop-process.wasm'), '--timeout', '200', demo])
    assert.equal(result.status, 1)
    assert.match(result.stderr.toString(), /ERR_WASM_TIMEOUT/)
  })

  it('exits 2 with usage on bad arguments', () => {
    const result = wasmSandbox(['--bogus'])
    assert.equal(result.status, 2)
    assert.match(result.stderr.toString(), /Usage: wasm-sandbox/)
  })
})
