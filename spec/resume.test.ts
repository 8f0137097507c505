/**
 * Crash and resume, for real: a child process runs processFile with a stateful guest, the test
 * SIGKILLs it at spread-out moments, runs it again until it completes, and compares the output
 * byte for byte with an uninterrupted run.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { after, before, describe, it } from 'node:test'
import { processFile, type Isolation } from '../lib/index.js'
import { example, numbererRef, upperRef, wcRef } from './helpers/reference.js'
import { randomLines } from './helpers/streams.js'

const CHILD = fileURLToPath(new URL('./children/process-file.js', import.meta.url))
const EVERY = 256 * 1024

interface ChildResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  ms: number
}

/**
 * Runs the child; kills it `killAfterMs` after it starts, or `delayMs` after it reports its
 * `afterCheckpoint`-th saved checkpoint (so the kill lands where there is state to resume).
 */
function runChild(args: string[], kill?: { afterMs?: number; afterCheckpoint?: number; delayMs?: number; signal?: NodeJS.Signals }, pool?: number): Promise<ChildResult> {
  return new Promise((resolve) => {
    const started = performance.now()
    const env = pool ? { ...process.env, POOL: String(pool) } : process.env
    const child = spawn(process.execPath, [CHILD, ...args], { stdio: ['ignore', 'pipe', 'inherit'], env })
    let stdout = ''
    let saved = 0
    let timer: NodeJS.Timeout | undefined
    child.stdout.on('data', (d: Buffer) => {
      stdout += d
      const before = saved
      saved = (stdout.match(/^checkpoint /gm) ?? []).length
      if (kill?.afterCheckpoint !== undefined && before < kill.afterCheckpoint && saved >= kill.afterCheckpoint) {
        timer = setTimeout(() => child.kill(kill.signal ?? 'SIGKILL'), kill.delayMs ?? 0)
      }
    })
    if (kill?.afterMs !== undefined) timer = setTimeout(() => child.kill('SIGKILL'), kill.afterMs)
    const guard = setTimeout(() => child.kill('SIGKILL'), 60_000)
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      clearTimeout(guard)
      resolve({ code, signal, stdout, ms: performance.now() - started })
    })
  })
}

function resultOf(run: ChildResult): { resumedFrom: number | null; saved: number } {
  const line = run.stdout.split('\n').find((l) => l.startsWith('result '))
  assert.ok(line, `the child reported no result: ${run.stdout.slice(-200)}`)
  return JSON.parse(line.slice('result '.length))
}

describe('crash and resume (processFile)', () => {
  let work: string
  let input: string
  let inputBytes: Buffer
  before(() => {
    work = mkdtempSync(join(tmpdir(), 'wasm-sandbox-resume-'))
    input = join(work, 'input.txt')
    inputBytes = randomLines(24 * 1024 * 1024, 1234)
    writeFileSync(input, inputBytes)
  })
  after(() => rmSync(work, { recursive: true, force: true }))

  const cases: { guest: string; ref: (b: Buffer) => Buffer; isolation: Isolation; kills: number; pool?: number }[] = [
    { guest: 'numberer', ref: numbererRef, isolation: 'worker', kills: 12 },
    { guest: 'wc', ref: wcRef, isolation: 'worker', kills: 5 },
    { guest: 'numberer', ref: numbererRef, isolation: 'inline', kills: 5 },
    // A pool's checkpoints hold offsets only, cut after the contiguous prefix of finished chunks.
    { guest: 'upper', ref: upperRef, isolation: 'worker', kills: 5, pool: 2 },
  ]
  for (const { guest, ref, isolation, kills, pool } of cases) {
    it(`${guest} (${isolation}${pool ? `, pool of ${pool}` : ''}): killed at ${kills} points, resumed, output identical to an uninterrupted run`, async (t) => {
      const expected = ref(inputBytes)
      // An uninterrupted run: its output is the reference, its checkpoint count spreads the kills.
      const cleanOut = join(work, `${guest}-${isolation}${pool ?? ''}-clean.out`)
      const clean = await runChild([input, cleanOut, join(work, `${guest}-${isolation}${pool ?? ''}-clean.ck`), guest, isolation, String(EVERY)], undefined, pool)
      assert.equal(clean.code, 0)
      assert.ok(readFileSync(cleanOut).equals(expected), 'the uninterrupted run matches the reference')
      const checkpoints = resultOf(clean).saved
      assert.ok(checkpoints >= kills, `an uninterrupted run saves enough checkpoints (${checkpoints})`)

      let resumed = 0
      for (let k = 0; k < kills; k++) {
        const out = join(work, `${guest}-${isolation}${pool ?? ''}-${k}.out`)
        const dir = join(work, `${guest}-${isolation}${pool ?? ''}-${k}.ck`)
        const args = [input, out, dir, guest, isolation, String(EVERY)]
        // Kill after a checkpoint spread over the run, a few ms later so it lands mid-chunk; half
        // the time kill the resumed run too; then run to the end.
        const first = await runChild(args, { afterCheckpoint: 1 + Math.floor((k * (checkpoints - 1)) / kills), delayMs: k % 4 }, pool)
        if (k % 2 === 1) await runChild(args, { afterCheckpoint: 1, delayMs: 2 }, pool)
        const interrupted = first.signal === 'SIGKILL'
        const checkpointLeft = existsSync(dir) && readdirSync(dir).some((f) => f.endsWith('.wsck'))
        const last = await runChild(args, undefined, pool)
        assert.equal(last.code, 0, 'the final run completed')
        const result = resultOf(last)
        if (checkpointLeft) {
          assert.notEqual(result.resumedFrom, null, 'a checkpoint was left, so the run resumed from it')
          if (interrupted) resumed++
        }
        assert.ok(readFileSync(out).equals(expected), `kill point ${k}: output differs from the uninterrupted run`)
        assert.ok(!existsSync(dir) || readdirSync(dir).every((f) => !f.endsWith('.wsck')), 'checkpoints are removed on success')
      }
      t.diagnostic(`${resumed} of ${kills} kills interrupted a run that then resumed from a checkpoint (${checkpoints} checkpoints in an uninterrupted run)`)
      assert.ok(resumed >= kills / 2, `only ${resumed} of ${kills} kills hit a run with a checkpoint: the test would not test resuming`)
    })
  }

  it('a kill during a checkpoint write leaves a usable checkpoint set', async () => {
    const out = join(work, 'kill-in-save.out')
    const dir = join(work, 'kill-in-save.ck')
    const killed = await runChild([input, out, dir, 'numberer', 'worker', String(EVERY), '5'])
    assert.equal(killed.signal, 'SIGKILL')
    const last = await runChild([input, out, dir, 'numberer', 'worker', String(EVERY)])
    assert.equal(last.code, 0)
    assert.notEqual(resultOf(last).resumedFrom, null)
    assert.ok(readFileSync(out).equals(numbererRef(inputBytes)))
  })

  it('a corrupt latest checkpoint is skipped for the previous one', async () => {
    const out = join(work, 'corrupt.out')
    const dir = join(work, 'corrupt.ck')
    await runChild([input, out, dir, 'numberer', 'worker', String(EVERY)], { afterCheckpoint: 4 })
    const files = readdirSync(dir).filter((f) => f.endsWith('.wsck')).sort()
    assert.ok(files.length >= 2, `need two checkpoints, have ${files.length}`)
    const newest = join(dir, files.at(-1)!)
    const bytes = readFileSync(newest)
    bytes[bytes.length >> 1] ^= 0xff
    writeFileSync(newest, bytes)
    const last = await runChild([input, out, dir, 'numberer', 'worker', String(EVERY)])
    assert.equal(last.code, 0)
    assert.ok(readFileSync(out).equals(numbererRef(inputBytes)))
  })

  it('a checkpoint from another module is refused', async () => {
    const out = join(work, 'other.out')
    const dir = join(work, 'other.ck')
    await runChild([input, out, dir, 'numberer', 'worker', String(EVERY)], { afterCheckpoint: 2 })
    await assert.rejects(
      processFile(input, out, example('wc.wasm'), { bufferSize: 16 * 1024, checkpoint: { dir, every: EVERY } }),
      { code: 'ERR_WASM_CHECKPOINT_MISMATCH' },
    )
  })

  it('a checkpoint over an input that changed since is refused, not resumed into mixed output', async () => {
    const changed = join(work, 'changed.txt')
    writeFileSync(changed, inputBytes.subarray(0, 8 * 1024 * 1024))
    const out = join(work, 'changed.out')
    const dir = join(work, 'changed.ck')
    await runChild([changed, out, dir, 'numberer', 'worker', String(EVERY)], { afterCheckpoint: 2 })
    assert.ok(readdirSync(dir).some((f) => f.endsWith('.wsck')), 'the first run left a checkpoint')
    // Same size, other bytes, later modification: only the time tells; then another size.
    const edited = Buffer.from(inputBytes.subarray(0, 8 * 1024 * 1024))
    edited[100] ^= 1
    await new Promise((resolve) => setTimeout(resolve, 20))
    writeFileSync(changed, edited)
    const options = { bufferSize: 16 * 1024, checkpoint: { dir, every: EVERY } }
    await assert.rejects(processFile(changed, out, example('numberer.wasm'), options), { code: 'ERR_WASM_CHECKPOINT_MISMATCH', message: /input file changed/ })
    writeFileSync(changed, inputBytes.subarray(0, 4 * 1024 * 1024))
    await assert.rejects(processFile(changed, out, example('numberer.wasm'), options), { code: 'ERR_WASM_CHECKPOINT_MISMATCH', message: /input file changed/ })
  })

  it('a run stopped by SIGTERM resumes byte-identically', async () => {
    const out = join(work, 'sigterm.out')
    const dir = join(work, 'sigterm.ck')
    const stopped = await runChild([input, out, dir, 'numberer', 'worker', String(EVERY)], { afterCheckpoint: 3, signal: 'SIGTERM' })
    assert.equal(stopped.signal, 'SIGTERM')
    const last = await runChild([input, out, dir, 'numberer', 'worker', String(EVERY)])
    assert.equal(last.code, 0)
    assert.notEqual(resultOf(last).resumedFrom, null)
    assert.ok(readFileSync(out).equals(numbererRef(inputBytes)))
  })
})

describe('processFile leaves files alone when it cannot run', () => {
  let dir: string
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'wasm-sandbox-pf-'))
  })
  after(() => rmSync(dir, { recursive: true, force: true }))

  const files = (): { input: string; output: string } => {
    const input = join(dir, `in-${Math.random().toString(36).slice(2)}.txt`)
    const output = `${input}.out`
    writeFileSync(input, 'some input\n')
    writeFileSync(output, 'PRECIOUS EXISTING OUTPUT\n')
    return { input, output }
  }

  it('a bad option, a module that does not load, or a checkpoint without a dir: a typed error, the output untouched', async () => {
    // The output was truncated first, then the options were checked or the module loaded.
    const cases: Array<[string, Parameters<typeof processFile>[2], Parameters<typeof processFile>[3], string]> = [
      ['bad bufferSize', example('upper.wasm'), { bufferSize: -1 }, 'ERR_WASM_INVALID_OPTION'],
      ['unknown option', example('upper.wasm'), { bogus: 1 } as never, 'ERR_WASM_INVALID_OPTION'],
      ['missing module', join(dir, 'no-such.wasm'), {}, 'ERR_WASM_MODULE_NOT_FOUND'],
      ['checkpoint without dir', example('upper.wasm'), { checkpoint: {} as never }, 'ERR_WASM_INVALID_OPTION'],
      ['unknown checkpoint option', example('upper.wasm'), { checkpoint: { dir: join(dir, 'ck'), saveTimout: 10 } as never }, 'ERR_WASM_INVALID_OPTION'],
      ['bad checkpoint.saveTimeout', example('upper.wasm'), { checkpoint: { dir: join(dir, 'ck'), saveTimeout: 0 } }, 'ERR_WASM_INVALID_OPTION'],
    ]
    for (const [what, module, options, code] of cases) {
      const { input, output } = files()
      await assert.rejects(processFile(input, output, module, options), { code }, what)
      assert.equal(readFileSync(output, 'utf8'), 'PRECIOUS EXISTING OUTPUT\n', `${what}: the output was touched`)
    }
  })

  it('the output named as the input, or as the module, is refused; neither file is touched', async () => {
    const { input } = files()
    await assert.rejects(processFile(input, input, example('upper.wasm')), { code: 'ERR_WASM_INVALID_OPTION', message: /is the input file/ })
    assert.equal(readFileSync(input, 'utf8'), 'some input\n')
    const module = join(dir, 'upper-copy.wasm')
    writeFileSync(module, readFileSync(example('upper.wasm')))
    await assert.rejects(processFile(input, module, module), { code: 'ERR_WASM_INVALID_OPTION', message: /is the module/ })
    assert.deepEqual(readFileSync(module), readFileSync(example('upper.wasm')))
  })

  it('an onStream that throws rejects with its error and stops the stream it was given', async () => {
    const { input, output } = files()
    let given: { destroyed: boolean } | undefined
    await assert.rejects(
      processFile(input, output, example('upper.wasm'), {
        onStream: (stream) => {
          given = stream
          throw new Error('no progress bar today')
        },
      }),
      /no progress bar today/,
    )
    assert.equal(given?.destroyed, true, 'the stream was left running')
    assert.equal(readFileSync(output, 'utf8'), 'PRECIOUS EXISTING OUTPUT\n')
  })

  it('a run that succeeds replaces the old contents, even with no output at all', async () => {
    const { input, output } = files()
    assert.equal((await processFile(input, output, example('upper.wasm'))).outputBytes, 11)
    assert.equal(readFileSync(output, 'utf8'), 'SOME INPUT\n')
    writeFileSync(input, '')
    writeFileSync(output, 'PRECIOUS EXISTING OUTPUT\n')
    assert.equal((await processFile(input, output, example('upper.wasm'))).outputBytes, 0)
    assert.equal(readFileSync(output, 'utf8'), '')
  })
})

describe('processFile without checkpoints reads 4 MiB at a time', () => {
  it("cuts its reads into bufferSize chunks all the same: a guest that reports each chunk's end sees every one", async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'wasm-sandbox-pf-io-'))
    t.after(() => rmSync(dir, { recursive: true, force: true }))
    const input = join(dir, 'in.bin')
    const output = join(dir, 'out.txt')
    // Past two 4 MiB reads and not a multiple of the chunk: the last chunk is short.
    const bytes = 9 * 1024 * 1024 + 123
    writeFileSync(input, Buffer.alloc(bytes, 'a'))
    // 100,000 and 3 MiB do not divide 4 MiB: chunks span reads. 5 MiB is past a read.
    for (const chunk of [64 * 1024, 100_000, 3 * 1024 * 1024, 5 * 1024 * 1024]) {
      const result = await processFile(input, output, example('counter-global.wasm'), { bufferSize: chunk })
      const ends: number[] = []
      for (let end = chunk; end < bytes; end += chunk) ends.push(end)
      ends.push(bytes)
      assert.equal(readFileSync(output, 'utf8'), ends.map((n) => `${n}\n`).join(''), `bufferSize ${chunk}`)
      assert.equal(result.outputBytes, readFileSync(output).length)
    }
  })
})
