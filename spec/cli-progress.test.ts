/**
 * The progress line: drawn on standard error only when it is a terminal, so these tests run the
 * built binary under a pseudo-terminal made by `script` (util-linux). Where `script` is missing
 * the pseudo-terminal tests skip themselves and say so; the tests without a terminal always run.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { cli, scratch, shellQuote, wasmSandbox } from './helpers/cli.js'
import { example, fixture, upperRef } from './helpers/reference.js'

const dirs = scratch()
after(() => dirs.cleanup())

const script = spawnSync('script', ['--version'], { encoding: 'utf8' })
const noPty = script.error || script.status !== 0 ? 'needs script(1) from util-linux to make a pseudo-terminal, and it is not installed' : false

const CLEAR = '\r\x1b[K'

/** Runs `node dist/cli.js` with a terminal for stdin, stdout and stderr: what that terminal showed. */
function underTerminal(args: string[], redirect = ''): { status: number | null; screen: string } {
  const command = [process.execPath, cli, ...args].map(shellQuote).join(' ') + redirect
  const result = spawnSync('script', ['-qec', command, '/dev/null'], { encoding: 'utf8', timeout: 60_000, input: '' })
  if (result.error) throw result.error
  return { status: result.status, screen: result.stdout }
}

/** A file slow.wasm takes about 25 ms a KiB over: a run of about a second per 40 KiB. */
function slowInput(dir: string, chunks: number): string {
  const bytes = Buffer.alloc(1024 * chunks, 'z')
  for (let i = 0; i < bytes.length; i += 1024) bytes[i] = 1
  const path = join(dir, 'slow.bin')
  writeFileSync(path, bytes)
  return path
}

describe('progress line on a terminal', { skip: noPty }, () => {
  it('shows bytes, percent, rate and ETA as it goes, and a summary line at the end', () => {
    const dir = dirs.dir('progress-')
    const input = slowInput(dir, 60)
    const { status, screen } = underTerminal([fixture('slow.wasm'), input, '-b', '1024', '-o', join(dir, 'out.bin')])
    assert.equal(status, 0, screen)
    assert.deepEqual(readFileSync(join(dir, 'out.bin')), readFileSync(input), 'the output is the file, not the terminal')
    const frames = screen.split(CLEAR).filter(Boolean)
    assert.ok(frames.length >= 2, `redrawn in place as it runs: ${JSON.stringify(screen)}`)
    assert.ok(
      frames.some((f) => /^[\d.]+ (B|KiB) \/ 60\.0 KiB {2}\d{1,2}% {2}[\d.]+ (B|KiB)\/s {2}ETA \d+:\d\d$/.test(f)),
      `a line with an ETA while it runs: ${JSON.stringify(frames)}`,
    )
    assert.match(frames[frames.length - 1]!, /^60\.0 KiB \/ 60\.0 KiB {2}100% {2}[\d.]+ (B|KiB|MiB)\/s {2}in \d+:\d\d\r?\n$/, 'the summary stays')
  })

  it('knows the size of standard input redirected from a file', () => {
    const dir = dirs.dir('progress-')
    const { status, screen } = underTerminal([example('upper.wasm'), '-o', join(dir, 'out.txt')], ` < ${shellQuote(example('demo-input.txt'))}`)
    assert.equal(status, 0, screen)
    assert.deepEqual(readFileSync(join(dir, 'out.txt')), upperRef(readFileSync(example('demo-input.txt'))))
    assert.match(screen, /\r\x1b\[K1\.54 KiB \/ 1\.54 KiB {2}100% {2}[^\n]* in \d+:\d\d\r?\n$/)
  })

  it('without a known size (a pipe): bytes and rate, no percent', () => {
    const dir = dirs.dir('progress-')
    const demo = shellQuote(example('demo-input.txt'))
    const command = `cat ${demo} | ${[process.execPath, cli, example('upper.wasm'), '-o', join(dir, 'out.txt')].map(shellQuote).join(' ')}`
    const result = spawnSync('script', ['-qec', command, '/dev/null'], { encoding: 'utf8', timeout: 60_000, input: '' })
    assert.equal(result.status, 0, result.stdout)
    assert.match(result.stdout, /\r\x1b\[K1\.54 KiB {2}[\d.]+ (B|KiB|MiB)\/s {2}in \d+:\d\d\r?\n$/)
  })

  it('--quiet draws nothing', () => {
    const dir = dirs.dir('progress-')
    const { status, screen } = underTerminal([example('upper.wasm'), example('demo-input.txt'), '-o', join(dir, 'out.txt'), '--quiet'])
    assert.equal(status, 0, screen)
    assert.equal(screen, '')
    assert.deepEqual(readFileSync(join(dir, 'out.txt')), upperRef(readFileSync(example('demo-input.txt'))))
  })

  it('nothing is drawn over output going to the same terminal', () => {
    const { status, screen } = underTerminal([example('upper.wasm'), example('demo-input.txt')])
    assert.equal(status, 0, screen)
    assert.ok(!screen.includes('\x1b['), 'no control sequences in the output')
    assert.equal(screen.replace(/\r\n/g, '\n'), upperRef(readFileSync(example('demo-input.txt'))).toString())
  })

  it("a WASI program's stderr is not drawn over", () => {
    const dir = dirs.dir('progress-')
    const { status, screen } = underTerminal([example('wasi/fail.wasm'), example('demo-input.txt'), '-o', join(dir, 'out.txt')])
    assert.equal(status, 3, screen)
    const lines = screen.split(/\r?\n/)
    assert.ok(lines.includes('fail: deliberate failure (exit status 3)'), JSON.stringify(screen))
  })

  it('a failure wipes the line and prints the error on a line of its own', () => {
    const dir = dirs.dir('progress-')
    const input = slowInput(dir, 120)
    writeFileSync(join(dir, 'out.bin'), 'precious')
    const { status, screen } = underTerminal([fixture('slow.wasm'), input, '-b', '1024', '--deadline', '1500', '-o', join(dir, 'out.bin')])
    assert.equal(status, 1, screen)
    assert.match(screen, /KiB \/ 120 KiB/, 'the line was drawn before the failure')
    assert.match(screen, /\r\x1b\[Kwasm-sandbox: ERR_WASM_TIMEOUT[^\n]*\r?\n$/)
    assert.equal(readFileSync(join(dir, 'out.bin'), 'utf8'), 'precious')
  })
})

describe('progress line without a terminal', () => {
  it('standard error stays empty when it is a pipe, even for a run of a second or more', () => {
    const dir = dirs.dir('progress-')
    const input = slowInput(dir, 40)
    const result = wasmSandbox([fixture('slow.wasm'), input, '-b', '1024', '-o', join(dir, 'out.bin')])
    assert.equal(result.status, 0, result.stderr)
    assert.equal(result.stderr, '')
    assert.deepEqual(readFileSync(join(dir, 'out.bin')), readFileSync(input))
  })
})
