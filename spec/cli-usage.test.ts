/**
 * The command line itself: help, version, and what a mistake on it gets (exit 2, a message
 * naming the mistake, nothing written). Runs the built binary, as a user would.
 */
import assert from 'node:assert/strict'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { scratch, wasmSandbox } from './helpers/cli.js'
import { example, repoRoot, upperRef } from './helpers/reference.js'

const demo = example('demo-input.txt')
const { version } = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string }

describe('command line: help and version', () => {
  it('--help prints the commands, the run options and the exit statuses on standard output', () => {
    for (const args of [['--help'], ['-h']]) {
      const result = wasmSandbox(args)
      assert.equal(result.status, 0, result.stderr)
      assert.equal(result.stderr, '')
      const help = result.stdout.toString()
      assert.match(help, /^Usage: wasm-sandbox /)
      assert.match(help, /^ {2}inspect /m, 'lists the inspect command')
      for (const flag of ['--output', '--buffer-size', '--recovery', '--max-concurrency', '--checkpoint-dir', '--quiet', '--stats', '--dir-rw', '--per-record']) {
        assert.ok(help.includes(flag), `help names ${flag}`)
      }
      assert.match(help, /Exit status:[\s\S]*\b2 +a usage error/)
    }
  })

  it('help for a command: run --help, help inspect', () => {
    const run = wasmSandbox(['run', '--help'])
    assert.equal(run.status, 0, run.stderr)
    assert.match(run.stdout.toString(), /^Usage: wasm-sandbox run /)
    const inspect = wasmSandbox(['help', 'inspect'])
    assert.equal(inspect.status, 0, inspect.stderr)
    assert.match(inspect.stdout.toString(), /^Usage: wasm-sandbox inspect /)
    assert.match(inspect.stdout.toString(), /--no-probe/)
  })

  it('--version prints the package version', () => {
    for (const flag of ['--version', '-V']) {
      const result = wasmSandbox([flag])
      assert.equal(result.status, 0, result.stderr)
      assert.equal(result.stdout.toString(), `${version}\n`)
    }
  })

  it('no arguments at all: the help on standard error, exit 2', () => {
    const result = wasmSandbox([])
    assert.equal(result.status, 2)
    assert.equal(result.stdout.length, 0)
    assert.match(result.stderr, /^Usage: wasm-sandbox /)
  })
})

describe('command line: mistakes exit 2 and touch nothing', () => {
  const dirs = scratch()
  after(() => dirs.cleanup())
  const PRECIOUS = Buffer.from('an earlier result\n')

  function workdir(): { dir: string; output: string } {
    const dir = dirs.dir('usage-')
    const output = join(dir, 'out.txt')
    writeFileSync(output, PRECIOUS)
    return { dir, output }
  }

  function assertUntouched(dir: string, output: string): void {
    assert.deepEqual(readFileSync(output), PRECIOUS)
    assert.deepEqual(readdirSync(dir), ['out.txt'])
  }

  it('an unknown flag is named, with the nearest real one and where help is', () => {
    const { dir, output } = workdir()
    const result = wasmSandbox([example('upper.wasm'), demo, '--bufer-size', '1024', '-o', output])
    assert.equal(result.status, 2, result.stderr)
    assert.match(result.stderr, /^wasm-sandbox: unknown option '--bufer-size'\n/)
    assert.match(result.stderr, /Did you mean --buffer-size\?/)
    assert.match(result.stderr, /wasm-sandbox --help/)
    assertUntouched(dir, output)
  })

  it('an extra argument is refused, saying how many are expected', () => {
    const { dir, output } = workdir()
    const result = wasmSandbox([example('upper.wasm'), demo, demo, '-o', output])
    assert.equal(result.status, 2, result.stderr)
    assert.match(result.stderr, /^wasm-sandbox: too many arguments for 'run'\. Expected 2 arguments but got 3\./)
    assertUntouched(dir, output)
  })

  it('a flag without its value is named', () => {
    const result = wasmSandbox([example('upper.wasm'), demo, '--buffer-size'])
    assert.equal(result.status, 2, result.stderr)
    assert.match(result.stderr, /^wasm-sandbox: option '-b, --buffer-size <bytes\|auto>' argument missing/)
  })

  for (const args of [
    ['--recovery', 'maybe'],
    ['--recovery', 'retry=0'],
    ['--recovery', 'retry=101'],
    ['--recovery', 'retry'],
    ['--backpressure', 'fast'],
    ['--max-concurrency', '0'],
    ['--max-concurrency', '2x'],
    ['--max-in-flight', '0'],
    ['--deadline', '0'],
    ['--high-water-mark', '-5'],
    ['--sample-rate', '0'],
    ['--checkpoint-every', '1000'],
    ['--checkpoint-keep', '2'],
    ['--checkpoint-dir', 'ck', '--checkpoint-keep', '0'],
    ['--dir-rw', 'x', '--per-record'],
  ]) {
    it(`a bad value or combination (${args.join(' ')}) exits 2 with one line naming the flag`, () => {
      const { dir, output } = workdir()
      const result = wasmSandbox([example('upper.wasm'), demo, ...args, '-o', output], { cwd: dir })
      assert.equal(result.status, 2, result.stderr)
      assert.match(result.stderr, /^wasm-sandbox: [^\n]+\n$/, 'one line')
      assert.match(result.stderr, /--[a-z-]+/, 'names the flag')
      assert.doesNotMatch(result.stderr, /limits\.|flowControl\.|recoveryStrategy|maxConcurrency|highWaterMark|wasi\./, 'speaks in flags, not library option names')
      assertUntouched(dir, output)
    })
  }

  it('WASI grants the library refuses are named by their flag', () => {
    const { dir, output } = workdir()
    const missing = join(dir, 'no-such-dir')
    const result = wasmSandbox([example('wasi/cat.wasm'), demo, '--dir', `${missing}::/data`, '-o', output])
    assert.equal(result.status, 2, result.stderr)
    assert.equal(result.stderr, `wasm-sandbox: --dir (guest path /data): ${missing} is not a directory\n`)
    const record = wasmSandbox([example('wasi/cat.wasm'), demo, '--dir-rw', dir, '--per-record', '-o', output])
    assert.equal(record.status, 2, record.stderr)
    assert.match(record.stderr, /^wasm-sandbox: --dir-rw cannot go with --per-record \(in 'record' mode every run starts from the same files\)\n$/)
    assertUntouched(dir, output)
  })

  it('inspect without a module names what is missing', () => {
    const result = wasmSandbox(['inspect'])
    assert.equal(result.status, 2, result.stderr)
    assert.match(result.stderr, /^wasm-sandbox: missing required argument 'module'\n/)
    assert.equal(result.stdout.length, 0)
  })

  it('inspect refuses program arguments after --', () => {
    const result = wasmSandbox(['inspect', example('upper.wasm'), '--', 'x'])
    assert.equal(result.status, 2, result.stderr)
    assert.match(result.stderr, /inspect takes no program arguments/)
  })

  it('an option value that is -- stays a value, not the start of program arguments', () => {
    const result = wasmSandbox([example('upper.wasm'), demo, '--delimiter', '--'])
    assert.equal(result.status, 0, result.stderr)
    assert.deepEqual(result.stdout, upperRef(readFileSync(demo)))
  })
})

describe('command line: --timeout with --inline', () => {
  it('warns that the time limit cannot apply, and runs', () => {
    const result = wasmSandbox([example('upper.wasm'), demo, '--inline', '--timeout', '1000'])
    assert.equal(result.status, 0, result.stderr)
    assert.deepEqual(result.stdout, upperRef(readFileSync(demo)))
    assert.match(result.stderr, /^wasm-sandbox: warning: --timeout does not apply with --inline\b[^\n]*hangs[^\n]*\n$/)
  })

  it('says nothing when the guest runs in a worker, or --inline comes alone', () => {
    for (const args of [['--timeout', '1000'], ['--inline']]) {
      const result = wasmSandbox([example('upper.wasm'), demo, ...args])
      assert.equal(result.status, 0, result.stderr)
      assert.equal(result.stderr, '')
    }
  })
})

describe('command line: the worker started before the tool has loaded', () => {
  it('is started for a run in a worker, not for --inline, inspect, help or version', async () => {
    const { runsInWorker } = await import('../lib/cli/prestart.js')
    assert.equal(runsInWorker(['upper.wasm', 'in.txt', '-o', 'out.txt']), true)
    assert.equal(runsInWorker(['run', 'upper.wasm']), true)
    // After `--` the arguments are the WASI program's, not ours.
    assert.equal(runsInWorker(['prog.wasm', '--', '--inline', '--help']), true)
    for (const argv of [[], ['--inline', 'upper.wasm'], ['inspect', 'upper.wasm'], ['help', 'inspect'], ['--help'], ['-h'], ['--version'], ['-V']]) {
      assert.equal(runsInWorker(argv), false, JSON.stringify(argv))
    }
  })

  it('left unused (a usage error), it does not keep the tool from exiting', () => {
    // A worker kept alive would hold the tool until spawnSync's timeout kills it (status null).
    const result = wasmSandbox([example('upper.wasm'), '--bogus-option'], { timeout: 20_000 })
    assert.equal(result.status, 2, result.stderr)
    assert.match(result.stderr, /unknown option '--bogus-option'/)
  })
})
