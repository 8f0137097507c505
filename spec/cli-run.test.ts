/**
 * The run command's stream options through the built binary: recovery, --stats, concurrency
 * and backpressure, and checkpoints that let the same command resume after a failure or a kill.
 */
import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { scratch, spawnWasmSandbox, wasmSandbox } from './helpers/cli.js'
import { example, fixture, numbererRef, upperRef } from './helpers/reference.js'
import { delay } from './helpers/streams.js'

const dirs = scratch()
after(() => dirs.cleanup())
const PRECIOUS = Buffer.from('an earlier result that must survive a failed run\n')

/** The last line of standard error, parsed: what --stats printed. */
/** Polls until `reached()` while `child` runs; fails (killing it) if it ends first or 20 s pass. */
async function whileRunning(child: ChildProcess, reached: () => boolean, failure: string): Promise<void> {
  const deadline = Date.now() + 20_000
  while (!reached()) {
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill('SIGKILL')
      assert.fail(failure)
    }
    await delay(5)
  }
}

function stats(stderr: string): Record<string, unknown> {
  const lines = stderr.trimEnd().split('\n')
  return JSON.parse(lines[lines.length - 1]!) as Record<string, unknown>
}

describe('run: recovery', () => {
  // fail-on-bang fails on any chunk holding '!'; with -b 5 each 5-byte line is a chunk.
  const input = Buffer.from('abcd\nef!g\nhijk\n')

  it('without --recovery the run fails at the chunk, exit 1, and -o is untouched', () => {
    const dir = dirs.dir('recovery-')
    writeFileSync(join(dir, 'in.txt'), input)
    writeFileSync(join(dir, 'out.txt'), PRECIOUS)
    const result = wasmSandbox([fixture('fail-on-bang.wasm'), join(dir, 'in.txt'), '-b', '5', '-o', join(dir, 'out.txt')])
    assert.equal(result.status, 1)
    assert.match(result.stderr, /ERR_WASM_GUEST_ERROR[^\n]*input offset 5/)
    assert.deepEqual(readFileSync(join(dir, 'out.txt')), PRECIOUS)
    assert.deepEqual(readdirSync(dir).sort(), ['in.txt', 'out.txt'])
  })

  it('--recovery skip drops the failing chunk and goes on; --stats counts it', () => {
    const dir = dirs.dir('recovery-')
    writeFileSync(join(dir, 'in.txt'), input)
    const result = wasmSandbox([fixture('fail-on-bang.wasm'), join(dir, 'in.txt'), '-b', '5', '--recovery', 'skip', '--stats'])
    assert.equal(result.status, 0, result.stderr)
    assert.equal(result.stdout.toString(), 'abcd\nhijk\n')
    assert.equal(stats(result.stderr).chunksSkipped, 1)
  })

  it('--recovery retry=N retries a chunk that keeps failing, then fails the run at it', () => {
    const dir = dirs.dir('recovery-')
    writeFileSync(join(dir, 'in.txt'), input)
    writeFileSync(join(dir, 'out.txt'), PRECIOUS)
    const result = wasmSandbox([fixture('fail-on-bang.wasm'), join(dir, 'in.txt'), '-b', '5', '--recovery', 'retry=2', '-o', join(dir, 'out.txt')])
    assert.equal(result.status, 1)
    assert.match(result.stderr, /ERR_WASM_GUEST_ERROR[^\n]*input offset 5/)
    assert.deepEqual(readFileSync(join(dir, 'out.txt')), PRECIOUS)
  })
})

describe('run: --stats', () => {
  it("prints the stream's metrics as one JSON line on standard error, the output alone on standard output", () => {
    const input = readFileSync(example('demo-input.txt'))
    const result = wasmSandbox([example('upper.wasm'), example('demo-input.txt'), '-b', '256', '--stats'])
    assert.equal(result.status, 0, result.stderr)
    assert.deepEqual(result.stdout, upperRef(input))
    assert.match(result.stderr, /^\{[^\n]*\}\n$/, 'one line, nothing else')
    const metrics = stats(result.stderr)
    assert.equal(metrics.bytesIn, input.length)
    assert.equal(metrics.bytesOut, input.length)
    assert.equal(metrics.chunks, Math.ceil(input.length / 256))
    assert.equal(typeof metrics.guestTimeMs, 'number')
  })

  it('also after a failure: where it got to', () => {
    const result = wasmSandbox([fixture('fail-on-bang.wasm'), '-b', '5', '--max-latency', '100000', '--stats'], { input: Buffer.from('abcd\nef!g\n') })
    assert.equal(result.status, 1)
    const [error, json] = result.stderr.trimEnd().split('\n') as [string, string]
    assert.match(error, /ERR_WASM_GUEST_ERROR/)
    assert.equal((JSON.parse(json) as { bytesOut: number }).bytesOut, 5)
  })

  it('is not printed without the flag', () => {
    const result = wasmSandbox([example('upper.wasm'), example('demo-input.txt')])
    assert.equal(result.status, 0)
    assert.equal(result.stderr, '')
  })
})

describe('run: concurrency, backpressure and limits', () => {
  const input = readFileSync(example('demo-input.txt'))

  it('--max-in-flight, --backpressure block, --high-water-mark and --max-output-per-chunk reach the stream', () => {
    const args = ['-b', '128', '--max-in-flight', '8', '--backpressure', 'block', '--high-water-mark', '4096', '--max-output-per-chunk', '128']
    const result = wasmSandbox([example('upper.wasm'), example('demo-input.txt'), ...args])
    assert.equal(result.status, 0, result.stderr)
    assert.deepEqual(result.stdout, upperRef(input))
    // The same limit one byte under a chunk's output: the guest is stopped.
    const tight = wasmSandbox([example('upper.wasm'), example('demo-input.txt'), ...args.slice(0, -1), '127'])
    assert.equal(tight.status, 1)
    assert.match(tight.stderr, /ERR_WASM_OUTPUT_LIMIT/)
  })

  it('--max-concurrency pools a guest said to be stateless, by --stateless or by the module, output in order', () => {
    const dir = dirs.dir('pool-')
    const declared = join(dir, 'upper-declared.wasm')
    writeFileSync(declared, Buffer.concat([readFileSync(example('upper.wasm')), Buffer.from([0, 23, 22]), Buffer.from('wasm-sandbox.stateless')]))
    for (const args of [[example('upper.wasm'), '--stateless'], [declared]]) {
      const result = wasmSandbox([...args, example('demo-input.txt'), '-b', '64', '--max-concurrency', '3', '--stats'])
      assert.equal(result.status, 0, result.stderr)
      assert.deepEqual(result.stdout, upperRef(input))
      assert.equal(stats(result.stderr).chunks, Math.ceil(input.length / 64))
    }
    // --no-stateless overrides the module's word: no pool then.
    const refused = wasmSandbox([declared, example('demo-input.txt'), '--max-concurrency', '3', '--no-stateless'])
    assert.equal(refused.status, 2, refused.stderr)
  })

  it("--max-concurrency auto: a pool that grows while it pays, one instance for a guest that keeps state", () => {
    const result = wasmSandbox([example('numberer.wasm'), example('demo-input.txt'), '-b', '64', '--max-concurrency', 'auto', '--stats'])
    assert.equal(result.status, 0, result.stderr)
    assert.deepEqual(result.stdout, numbererRef(input))
    const concurrency = stats(result.stderr).concurrency as { instances: number; auto: boolean }
    assert.equal(concurrency.auto, true)
    assert.equal(concurrency.instances, 1)
    const bad = wasmSandbox([example('upper.wasm'), example('demo-input.txt'), '--max-concurrency', 'many'])
    assert.equal(bad.status, 2)
    assert.equal(bad.stderr, 'wasm-sandbox: --max-concurrency takes a whole number or auto, got "many"\n')
  })

  it('--max-concurrency on a guest not said to be stateless is a usage error saying how to say it', () => {
    const result = wasmSandbox([example('numberer.wasm'), example('demo-input.txt'), '--max-concurrency', '2'])
    assert.equal(result.status, 2, result.stderr)
    assert.match(result.stderr, /^wasm-sandbox: --max-concurrency 2 [^\n]* is not stateless[^\n]*say so with --stateless[^\n]*\n$/)
    const inline = wasmSandbox([example('upper.wasm'), example('demo-input.txt'), '--max-concurrency', '2', '--stateless', '--inline'])
    assert.equal(inline.status, 2, inline.stderr)
    assert.match(inline.stderr, /^wasm-sandbox: --max-concurrency 2 [^\n]*cannot go with --inline/)
  })

  it('--deadline bounds the whole run', () => {
    const input = Buffer.alloc(1024 * 40, 'x')
    for (let i = 0; i < input.length; i += 1024) input[i] = 1 // slow.wasm: ~10M iterations a chunk
    const result = wasmSandbox([fixture('slow.wasm'), '-b', '1024', '--deadline', '200'], { input })
    assert.equal(result.status, 1)
    assert.match(result.stderr, /ERR_WASM_TIMEOUT/)
  })
})

describe('run: --checkpoint-dir', () => {
  /** An input slow.wasm takes about 25 ms a KiB chunk over, so a run lasts a few seconds. */
  function slowInput(chunks: number): Buffer {
    const input = Buffer.alloc(1024 * chunks, 'y')
    for (let i = 0; i < input.length; i += 1024) input[i] = 1
    return input
  }

  function workdir(input: Buffer): { dir: string; input: string; output: string; ck: string } {
    const dir = dirs.dir('ckpt-')
    writeFileSync(join(dir, 'in.bin'), input)
    writeFileSync(join(dir, 'out.bin'), PRECIOUS)
    return { dir, input: join(dir, 'in.bin'), output: join(dir, 'out.bin'), ck: join(dir, 'ck') }
  }

  it('a run stopped by a failure keeps its checkpoints and says so; the same command again resumes and finishes', () => {
    const bytes = slowInput(120)
    const w = workdir(bytes)
    const common = [fixture('slow.wasm'), w.input, '-o', w.output, '-b', '1024', '--checkpoint-dir', w.ck, '--checkpoint-every', '1024']
    const first = wasmSandbox([...common, '--deadline', '1500'])
    assert.equal(first.status, 1, first.stderr)
    assert.match(first.stderr, /ERR_WASM_TIMEOUT/)
    assert.match(first.stderr, /checkpoints in [^\n]*ck are kept: run the same command again to resume\n$/)
    assert.deepEqual(readFileSync(w.output), PRECIOUS, 'the -o file is replaced only when the run succeeds')
    assert.ok(readdirSync(w.ck).some((f) => f.startsWith('checkpoint-')), 'checkpoints saved')
    assert.ok(existsSync(join(w.dir, '.out.bin.partial')), 'the partial output is kept for the resume')

    const second = wasmSandbox([...common, '--stats'], { timeout: 60_000 })
    assert.equal(second.status, 0, second.stderr)
    assert.deepEqual(readFileSync(w.output), bytes, 'slow.wasm passes its input through')
    const metrics = stats(second.stderr)
    assert.ok((metrics.chunks as number) < 120, `resumed, not started over (${String(metrics.chunks)} chunks)`)
    assert.equal(metrics.bytesIn, bytes.length)
    assert.deepEqual(readdirSync(w.dir).sort(), ['ck', 'in.bin', 'out.bin'], 'no partial file left')
    assert.deepEqual(readdirSync(w.ck), [], 'checkpoints deleted once done')
  })

  it('a run killed mid-way resumes to a byte-identical output (a stateful guest)', async () => {
    const lines = Buffer.from(Array.from({ length: 300_000 }, (_, i) => `line ${i}\n`).join(''))
    const w = workdir(lines)
    // The numberer counts lines across chunks: a resume that lost or repeated a chunk shows.
    const args = [example('numberer.wasm'), w.input, '-o', w.output, '-b', '1024', '--checkpoint-dir', w.ck, '--checkpoint-every', '4096']
    const child = spawnWasmSandbox(args)
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)))
    await whileRunning(child, () => existsSync(w.ck) && readdirSync(w.ck).some((f) => f.startsWith('checkpoint-')), 'no checkpoint appeared while the run was going')
    child.kill('SIGKILL')
    assert.equal(await exited, 'SIGKILL')
    assert.deepEqual(readFileSync(w.output), PRECIOUS)
    const resumed = wasmSandbox([...args, '--stats'], { timeout: 60_000 })
    assert.equal(resumed.status, 0, resumed.stderr)
    assert.deepEqual(readFileSync(w.output), numbererRef(lines))
    assert.ok((stats(resumed.stderr).chunks as number) < Math.ceil(lines.length / 1024), 'resumed from the checkpoint')
  })

  it('SIGINT before any checkpoint: dies of it, the partial output removed, -o untouched', { skip: process.platform === 'win32' }, async () => {
    const w = workdir(slowInput(200))
    const child = spawnWasmSandbox([fixture('slow.wasm'), w.input, '-o', w.output, '-b', '1024', '--checkpoint-dir', w.ck, '--checkpoint-every', String(1 << 30)])
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)))
    const partial = join(w.dir, '.out.bin.partial')
    await whileRunning(child, () => existsSync(partial) && statSync(partial).size > 0, 'the run never started writing')
    child.kill('SIGINT')
    assert.equal(await exited, 'SIGINT')
    assert.deepEqual(readFileSync(w.output), PRECIOUS)
    assert.ok(!existsSync(partial), 'nothing to resume from, so nothing left behind')
  })

  it('a failure before any checkpoint leaves no partial output behind', () => {
    const w = workdir(Buffer.from('abcd\nef!g\nhijk\n'))
    const result = wasmSandbox([fixture('fail-on-bang.wasm'), w.input, '-o', w.output, '-b', '5', '--checkpoint-dir', w.ck])
    assert.equal(result.status, 1)
    assert.match(result.stderr, /^wasm-sandbox: ERR_WASM_GUEST_ERROR[^\n]*\n$/, 'no resume hint: there is nothing to resume from')
    assert.deepEqual(readFileSync(w.output), PRECIOUS)
    assert.ok(!readdirSync(w.dir).some((f) => f.endsWith('.partial')))
  })

  it('checkpoints of another input, or other options, are refused, not resumed from', () => {
    const bytes = slowInput(60)
    const w = workdir(bytes)
    const first = wasmSandbox([fixture('slow.wasm'), w.input, '-o', w.output, '-b', '1024', '--checkpoint-dir', w.ck, '--checkpoint-every', '1024', '--deadline', '700'])
    assert.equal(first.status, 1, first.stderr)
    assert.ok(readdirSync(w.ck).length > 0)
    // The same input with another chunk size: the library refuses, and the tool says what to do.
    const resized = wasmSandbox([fixture('slow.wasm'), w.input, '-o', w.output, '-b', '2048', '--checkpoint-dir', w.ck])
    assert.equal(resized.status, 1, resized.stderr)
    assert.match(resized.stderr, /ERR_WASM_CHECKPOINT_MISMATCH[^\n]*--buffer-size[^\n]*\nwasm-sandbox: the checkpoints in [^\n]* are of a run with other options or another module: run it as it was, or delete them to start afresh\n$/)
    assert.deepEqual(readFileSync(w.output), PRECIOUS)
    assert.ok(existsSync(join(w.dir, '.out.bin.partial')), 'what the first run wrote is kept for its resume')
    const other = join(w.dir, 'other.bin')
    writeFileSync(other, bytes)
    const result = wasmSandbox([fixture('slow.wasm'), other, '-o', join(w.dir, 'other.out'), '-b', '1024', '--checkpoint-dir', w.ck])
    assert.equal(result.status, 2, result.stderr)
    assert.match(result.stderr, /--checkpoint-dir [^\n]* holds checkpoints of a run on [^\n]*in\.bin, not [^\n]*other\.bin/)
    assert.ok(!existsSync(join(w.dir, 'other.out')))
  })

  it('a --checkpoint-dir that cannot be read (a file): ERR_WASM_CHECKPOINT_FAILED naming it, exit 1, -o untouched', () => {
    const w = workdir(Buffer.from('abc\n'))
    writeFileSync(w.ck, 'not a directory\n')
    const result = wasmSandbox([example('upper.wasm'), w.input, '-o', w.output, '--checkpoint-dir', w.ck])
    assert.equal(result.status, 1, result.stderr)
    assert.match(result.stderr, /^wasm-sandbox: ERR_WASM_CHECKPOINT_FAILED: CheckpointDir\([^\n]*ck\)\.list\(\) failed: ENOTDIR[^\n]*\. Check --checkpoint-dir [^\n]*ck: it must be a directory this user can read and write\.\n$/)
    assert.deepEqual(readFileSync(w.output), PRECIOUS)
    assert.ok(!readdirSync(w.dir).some((f) => f.endsWith('.partial')))
  })

  it('checkpoints that cannot be deleted after a complete run: the output is in place all the same, exit 1 saying so', () => {
    const w = workdir(Buffer.from('hello world\n'))
    // A directory where the storage deletes its temporary files: unlink fails with EISDIR.
    mkdirSync(join(w.ck, '.tmp-stuck'), { recursive: true })
    const result = wasmSandbox([example('upper.wasm'), w.input, '-o', w.output, '--checkpoint-dir', w.ck])
    assert.equal(result.status, 1, result.stderr)
    assert.match(result.stderr, /ERR_WASM_CHECKPOINT_FAILED: CheckpointDir\([^\n]*ck\)\.prune\(\) failed: EISDIR[^\n]*\. The output is complete, but its checkpoints are still there[^\n]*\nwasm-sandbox: the output is in [^\n]*out\.bin; delete the checkpoints in [^\n]*ck before the next run with it\n$/)
    assert.equal(readFileSync(w.output, 'utf8'), 'HELLO WORLD\n')
    assert.ok(!readdirSync(w.dir).some((f) => f.endsWith('.partial')))
  })

  for (const [what, args, message] of [
    ['standard input', ['-', '-o', 'out.bin'], /needs an input file/],
    ['standard output', ['in.bin'], /needs -o naming a file/],
    ['-o -', ['in.bin', '-o', '-'], /needs -o naming a file/],
    ['a device', ['in.bin', '-o', '/dev/null'], /needs -o naming a regular file/],
  ] as const) {
    it(`with ${what} it is a usage error`, { skip: what === 'a device' && process.platform === 'win32' }, () => {
      const w = workdir(Buffer.from('abc'))
      const result = wasmSandbox([example('upper.wasm'), ...args, '--checkpoint-dir', 'ck'], { cwd: w.dir })
      assert.equal(result.status, 2, result.stderr)
      assert.match(result.stderr, message)
      assert.deepEqual(readdirSync(w.dir).sort(), ['in.bin', 'out.bin'])
      assert.ok(statSync(w.output).size === PRECIOUS.length)
    })
  }
})

describe('run: guest configuration, logs and automatic chunk size', () => {
  it('--config and --config-file hand the guest its configuration bytes (ABI v1.1)', () => {
    const dir = dirs.dir('config-')
    // v11-config passes its input through, then emits the configuration and three u32 sizes.
    const text = wasmSandbox([fixture('v11-config.wasm'), '--config', 'PATTERN'], { input: Buffer.from('ab') })
    assert.equal(text.status, 0, text.stderr)
    assert.equal(text.stdout.subarray(0, 9).toString(), 'abPATTERN')
    assert.equal(text.stdout.readUInt32LE(9), 7, 'config_size')
    const bytes = Buffer.from([0, 1, 2, 255])
    writeFileSync(join(dir, 'config.bin'), bytes)
    writeFileSync(join(dir, 'big.bin'), Buffer.alloc(1024 * 1024 + 1))
    const file = wasmSandbox([fixture('v11-config.wasm'), '--config-file', join(dir, 'config.bin')])
    assert.equal(file.status, 0, file.stderr)
    assert.deepEqual(file.stdout.subarray(0, 4), bytes)
    for (const [args, message] of [
      [['--config', 'a', '--config-file', join(dir, 'config.bin')], /^wasm-sandbox: --config and --config-file name the same thing: give one\n$/],
      [['--config-file', join(dir, 'missing.bin')], /^wasm-sandbox: --config-file \S+missing\.bin: cannot read it \(ENOENT\)\n$/],
      [['--config-file', join(dir, 'big.bin')], /^wasm-sandbox: --config must be at most 1048576 bytes/],
    ] as const) {
      const result = wasmSandbox([fixture('v11-config.wasm'), ...args])
      assert.equal(result.status, 2, result.stderr)
      assert.match(result.stderr, message)
    }
  })

  it('guest log messages go to standard error from warn up by default, --log picks the level', () => {
    // v11-log logs each chunk at the level its first byte names ('0' error .. '3' debug).
    const input = Buffer.from('0err\n1wrn\n2inf\n3dbg\n')
    const args = [fixture('v11-log.wasm'), '-d', '\\n', '-b', '5', '--max-latency', '100000']
    const shown = (log?: string): string[] =>
      wasmSandbox([...args, ...(log ? ['--log', log] : [])], { input })
        .stderr.split('\n')
        .filter(Boolean)
    assert.deepEqual(shown(), [
      'wasm-sandbox: guest error: 0err (process_chunk at input offset 0)',
      'wasm-sandbox: guest warn: 1wrn (process_chunk at input offset 5)',
    ])
    assert.deepEqual(shown('none'), [])
    assert.deepEqual(shown('error'), ['wasm-sandbox: guest error: 0err (process_chunk at input offset 0)'])
    assert.equal(shown('debug').length, 6, 'init and flush log at info too')
    assert.equal(wasmSandbox([...args, '--log', 'loud'], { input }).status, 2)
  })

  it('a guest cannot send control characters to the terminal through its log', () => {
    const result = wasmSandbox([fixture('v11-log.wasm'), '--log', 'warn'], { input: Buffer.from('1\x1b]0;pwned\x07\x1b[2J\n') })
    assert.equal(result.status, 0, result.stderr)
    assert.equal(result.stderr, 'wasm-sandbox: guest warn: 1\\x1b]0;pwned\\x07\\x1b[2J (process_chunk at input offset 0)\n')
  })

  it('--buffer-size auto tunes the chunk size as it runs (metrics().chunking)', () => {
    const input = readFileSync(example('demo-input.txt'))
    const result = wasmSandbox([example('upper.wasm'), example('demo-input.txt'), '--buffer-size', 'auto', '--stats'])
    assert.equal(result.status, 0, result.stderr)
    assert.deepEqual(result.stdout, upperRef(input))
    assert.equal((stats(result.stderr).chunking as { auto: boolean }).auto, true)
  })
})
