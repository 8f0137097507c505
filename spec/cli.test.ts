import assert from 'node:assert/strict'
import { pathToFileURL } from 'node:url'
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, linkSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { example, fixture, grepRef, repoRoot, upperRef, wcRef } from './helpers/reference.js'
import { delay } from './helpers/streams.js'
import { tempDir } from './helpers/temp.js'

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

  it('exits 2 on bad arguments, naming the flag and where the help is', () => {
    const result = wasmSandbox(['--bogus'])
    assert.equal(result.status, 2)
    assert.match(result.stderr.toString(), /^wasm-sandbox: unknown option '--bogus'\n[^\n]*wasm-sandbox --help/)
  })
})

describe('command-line tool: standard input and output redirected to files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'wasm-sandbox-cli-redirect-'))
  after(() => rmSync(dir, { recursive: true, force: true }))
  // Several MiB, so the input is read and the output written in more than one piece.
  const text = readFileSync(demo)
  const bigInput = Buffer.concat(Array.from({ length: Math.ceil((3 * 1024 * 1024) / text.length) }, () => text))
  const inPath = join(dir, 'in.txt')
  writeFileSync(inPath, bigInput)
  const node = `'${process.execPath}' '${cli}' '${example('upper.wasm')}'`
  const sh = (script: string) => spawnSync('sh', ['-c', script], { cwd: dir, encoding: 'buffer', timeout: 30_000 })

  it('< in > out: the output file holds exactly the transformed input', () => {
    const result = sh(`${node} < in.txt > out.txt`)
    assert.equal(result.status, 0, result.stderr.toString())
    assert.deepEqual(readFileSync(join(dir, 'out.txt')), upperRef(bigInput))
  })

  it('>> appends, and output shares the file offset with the commands around it', () => {
    writeFileSync(join(dir, 'log.txt'), 'kept\n')
    const result = sh(`{ echo before; ${node} < in.txt; echo after; } >> log.txt`)
    assert.equal(result.status, 0, result.stderr.toString())
    const expected = Buffer.concat([Buffer.from('kept\nbefore\n'), upperRef(bigInput), Buffer.from('after\n')])
    assert.deepEqual(readFileSync(join(dir, 'log.txt')), expected)
  })

  it('reads standard input from the offset the shell left it at', () => {
    const result = sh(`{ dd bs=5 count=1 of=/dev/null 2>/dev/null; ${node}; } < in.txt > rest.txt`)
    assert.equal(result.status, 0, result.stderr.toString())
    assert.deepEqual(readFileSync(join(dir, 'rest.txt')), upperRef(bigInput.subarray(5)))
  })
})

describe('command-line tool: the output file', () => {
  const dirs: string[] = []
  after(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
  })
  const PRECIOUS = Buffer.from('an earlier result that must survive a failed run\n')

  /** A directory holding a copy of the demo input (in.txt) and an existing output (out.txt). */
  function workdir(): { dir: string; input: string; output: string } {
    const dir = mkdtempSync(join(tmpdir(), 'wasm-sandbox-cli-'))
    dirs.push(dir)
    const input = join(dir, 'in.txt')
    const output = join(dir, 'out.txt')
    writeFileSync(input, readFileSync(demo))
    writeFileSync(output, PRECIOUS)
    return { dir, input, output }
  }

  for (const [what, module, inputName, code] of [
    ['a module path that does not exist', join(repoRoot, 'no-such-guest.wasm'), 'in.txt', /ERR_WASM_MODULE_NOT_FOUND/],
    ['a guest that traps', fixture('unreachable.wasm'), 'in.txt', /ERR_WASM_TRAP/],
    ['an input that does not exist', example('upper.wasm'), 'no-such-input.txt', /ENOENT/],
  ] as const) {
    it(`a failed run (${what}) leaves an existing -o file untouched and no temporary file`, () => {
      const { dir, output } = workdir()
      const result = wasmSandbox([module, join(dir, inputName), '-o', output])
      assert.equal(result.status, 1, result.stderr.toString())
      assert.match(result.stderr.toString(), code)
      assert.deepEqual(readFileSync(output), PRECIOUS)
      assert.deepEqual(readdirSync(dir).sort(), ['in.txt', 'out.txt'])
    })
  }

  it('a successful run replaces the -o file, keeping its permissions', () => {
    const { dir, input, output } = workdir()
    if (process.platform !== 'win32') chmodSync(output, 0o640)
    const result = wasmSandbox([example('upper.wasm'), input, '-o', output])
    assert.equal(result.status, 0, result.stderr.toString())
    assert.deepEqual(readFileSync(output), upperRef(readFileSync(demo)))
    assert.deepEqual(readdirSync(dir).sort(), ['in.txt', 'out.txt'])
    if (process.platform !== 'win32') assert.equal(statSync(output).mode & 0o777, 0o640)
  })

  it('-o naming a new file creates it; -o through a symlink replaces the file it points to', () => {
    const { dir, input } = workdir()
    const fresh = join(dir, 'fresh.txt')
    assert.equal(wasmSandbox([example('upper.wasm'), input, '-o', fresh]).status, 0)
    assert.deepEqual(readFileSync(fresh), upperRef(readFileSync(demo)))
    symlinkSync('out.txt', join(dir, 'link.txt'))
    assert.equal(wasmSandbox([example('pass.wasm'), input, '-o', join(dir, 'link.txt')]).status, 0)
    assert.ok(statSync(join(dir, 'link.txt')).isFile() && readdirSync(dir).includes('link.txt'))
    assert.deepEqual(readFileSync(join(dir, 'out.txt')), readFileSync(demo), 'written through the link')
  })

  it('-o naming a directory, or nothing, exits 2', () => {
    const { dir, input } = workdir()
    for (const target of [dir, '']) {
      const result = wasmSandbox([example('upper.wasm'), input, '-o', target])
      assert.equal(result.status, 2, result.stderr.toString())
      assert.match(result.stderr.toString(), /^wasm-sandbox: -o [^\n]+\n$/)
    }
    assert.deepEqual(readdirSync(dir).sort(), ['in.txt', 'out.txt'])
  })

  it('-o onto a device writes to it in place (never renames over /dev/null)', { skip: process.platform === 'win32' }, () => {
    const result = wasmSandbox([example('upper.wasm'), demo, '-o', '/dev/null'])
    assert.equal(result.status, 0, result.stderr.toString())
    assert.ok(statSync('/dev/null').isCharacterDevice())
  })

  for (const [how, alias] of [
    ['the same path', (dir: string) => join(dir, 'in.txt')],
    ['a symlink', (dir: string) => (symlinkSync(join(dir, 'in.txt'), join(dir, 'alias.txt')), join(dir, 'alias.txt'))],
    ['a hard link', (dir: string) => (linkSync(join(dir, 'in.txt'), join(dir, 'alias.txt')), join(dir, 'alias.txt'))],
  ] as const) {
    it(`-o onto the input through ${how} exits 2 and leaves the input intact`, () => {
      const { dir, input } = workdir()
      const result = wasmSandbox([example('upper.wasm'), input, '-o', alias(dir)])
      assert.equal(result.status, 2, result.stderr.toString())
      assert.match(result.stderr.toString(), /is the input file/)
      assert.deepEqual(readFileSync(input), readFileSync(demo))
      assert.ok(!readdirSync(dir).some((f) => f.endsWith('.tmp')))
    })
  }

  for (const args of [
    ['--buffer-size', 'abc'],
    ['--buffer-size', '0x400'],
    ['--buffer-size', '0'],
    ['--timeout', '5s'],
    ['--timeout', ''],
    ['--memory=-1'],
    ['--memory', '1000'],
    ['--max-output', '1.5'],
    ['--max-record-size', '10', '--buffer-size', '100'],
    ['--delimiter', ''],
    ['--buffer-size', '1', '--delimiter', 'ab'],
  ]) {
    it(`a bad option value (${args.join(' ')}) exits 2 with a one-line message, touching nothing`, () => {
      const { dir, input, output } = workdir()
      const result = wasmSandbox([example('upper.wasm'), input, ...args, '-o', output])
      const stderr = result.stderr.toString()
      assert.equal(result.status, 2, stderr)
      assert.match(stderr, /^wasm-sandbox: [^\n]+\n$/, 'one line')
      assert.match(stderr, /--[a-z-]+/, 'names the option')
      assert.deepEqual(readFileSync(output), PRECIOUS)
      assert.deepEqual(readdirSync(dir).sort(), ['in.txt', 'out.txt'])
    })
  }

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(`${signal} mid-run removes the temporary file and leaves the -o file untouched`, { skip: process.platform === 'win32' }, async () => {
      const { dir, output } = workdir()
      const child = spawn(process.execPath, [cli, example('pass.wasm'), '-b', '1024', '-o', output], { stdio: ['pipe', 'ignore', 'pipe'] })
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        child.on('exit', (code, signal) => resolve({ code, signal })),
      )
      try {
        // Standard input stays open, so the run is still going when the signal arrives.
        child.stdin.write(Buffer.alloc(4096, 'x'))
        const deadline = Date.now() + 10_000
        const temp = (): string | undefined => readdirSync(dir).find((f) => f !== 'in.txt' && f !== 'out.txt')
        while (!(temp() && statSync(join(dir, temp()!)).size > 0)) {
          assert.ok(Date.now() < deadline, 'the run started writing its temporary file')
          await delay(20)
        }
        child.kill(signal)
      } catch (err) {
        child.kill('SIGKILL')
        throw err
      }
      const { signal: died } = await exited
      assert.equal(died, signal, 'dies of the signal, as an uncaught one would')
      assert.deepEqual(readFileSync(output), PRECIOUS)
      assert.deepEqual(readdirSync(dir).sort(), ['in.txt', 'out.txt'])
    })
  }
})

describe('command-line tool: WASI programs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cli-wasi-'))
  after(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'dict.txt'), 'apple\n')

  it('runs a WASI program on a file with one command', () => {
    const result = wasmSandbox([example('wasi/wc.wasm'), demo])
    assert.equal(result.status, 0, result.stderr.toString())
    assert.deepEqual(result.stdout, wcRef(readFileSync(demo)))
  })

  it('passes what follows -- as the program arguments, and --per-record runs once per record', () => {
    const head = wasmSandbox([example('wasi/head.wasm'), demo, '--', '2'])
    assert.equal(head.stdout.toString(), readFileSync(demo, 'utf8').split('\n').slice(0, 2).join('\n') + '\n')
    const counter = wasmSandbox([example('wasi/counter.wasm'), '--per-record', '-d', '\\n'], Buffer.from('a\nb\n'))
    assert.equal(counter.stdout.toString(), '1\na\n1\nb\n')
  })

  it("passes on the program's exit status, with its stderr on standard error", () => {
    const result = wasmSandbox([example('wasi/fail.wasm'), demo])
    assert.equal(result.status, 3)
    assert.match(result.stderr.toString(), /deliberate failure/)
    assert.equal(result.stdout.length, 0)
  })

  it('grants nothing unless named: --env and --dir', () => {
    const bare = wasmSandbox([example('wasi/escape.wasm')], Buffer.alloc(0)).stdout.toString()
    assert.match(bare, /^getenv HOME: denied$/m)
    const granted = wasmSandbox([example('wasi/escape.wasm'), '--env', 'HOME=/x'], Buffer.alloc(0)).stdout.toString()
    assert.match(granted, /^getenv HOME: OPEN$/m)
    const lookup = wasmSandbox([example('wasi/lookup.wasm'), '--dir', `${dir}::/data`, '--', '/data/dict.txt'], Buffer.from('apple\npear\n'))
    assert.equal(lookup.status, 0, lookup.stderr.toString())
    assert.equal(lookup.stdout.toString(), '+ apple\n- pear\n')
    assert.equal(wasmSandbox([example('wasi/wc.wasm'), '--env', 'NOEQUALS'], Buffer.alloc(0)).status, 2)
  })
})

describe('command-line tool: -o onto the module', () => {
  it('is refused with exit 2, leaving the module intact', (t) => {
    const dir = tempDir(t, 'cli-module-')
    const copy = join(dir, 'upper.wasm')
    writeFileSync(copy, readFileSync(example('upper.wasm')))
    // Named by path, or by a file: URL (a module source may be one).
    for (const module of [copy, pathToFileURL(copy).href]) {
      const result = wasmSandbox([module, demo, '-o', copy])
      assert.equal(result.status, 2, module)
      assert.match(result.stderr.toString(), /is the module/)
      assert.deepEqual(readFileSync(copy), readFileSync(example('upper.wasm')))
    }
  })
})

describe('command-line tool: -o -', () => {
  it('writes to standard output, creating no file named -', (t) => {
    const dir = tempDir(t, 'cli-dash-')
    const result = spawnSync(process.execPath, [cli, example('upper.wasm'), demo, '-o', '-'], { cwd: dir, encoding: 'buffer', timeout: 20_000 })
    assert.equal(result.status, 0, result.stderr.toString())
    assert.deepEqual(result.stdout, upperRef(readFileSync(demo)))
    assert.deepEqual(readdirSync(dir), [])
  })
})
