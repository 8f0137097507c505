/**
 * Differential check across execution modes: every example guest (examples/*.wasm,
 * examples/wasi/*.wasm, the guest kits' committed builds) gives the same outcome, byte for byte,
 * run inline, in a worker, in a pool (the guests that are stateless) and resumed from a
 * checkpoint taken at a random point, over random inputs cut into random writes. The modes
 * share most of their code but not all of it (the worker's rings, the pool's reordering, the
 * capture and restore of guest state), so this is what keeps them from drifting apart. The
 * guests are found by listing the folders: a new example without an entry in GUESTS fails.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { after, before, describe, it } from 'node:test'
import fc from 'fast-check'
import { loadGuest, MemoryCheckpointStorage, WasmSandboxError, wasmTransform, type LoadedGuest, type SandboxOptions, type SandboxStream } from '../lib/index.js'
import { counterGlobalRef, example, grepRef, numbererRef, passRef, splitLines, upperRef, wcRef } from './helpers/reference.js'
import { delay, run } from './helpers/streams.js'

/** What a guest entry says about running it; one guest may have several (a WASI program per mode). */
interface Variant {
  /** Told apart in the test name when a guest has more than one. */
  label?: string
  options?: SandboxOptions
  /** The caller may say `stateless: true` (it is true of the guest): the pool mode runs it. */
  stateless?: true
  /** The guest refuses some bytes (a NUL, a word over 1 KiB): give it only text lines. */
  text?: true
  /** Its output depends on where chunks are cut: chunks only by size (`maxLatency: Infinity`). */
  chunkDependent?: true
  /** The expected output, where a simple reference exists: a check beside mode vs mode. */
  ref?: (input: Buffer, bufferSize: number) => Buffer
  /** Fewer runs than NUM_RUNS, for a costly guest (one that always fails costs a new thread per stream). */
  runs?: number
}

/** A directory granted to lookup.wasm as /data (made in `before`). */
let dataDir = ''
const record = (wasi: SandboxOptions['wasi'] = {}): SandboxOptions => ({ delimiter: '\n', wasi: { mode: 'record', ...wasi } })
const perLine = (f: (line: Buffer) => Buffer) => (input: Buffer) => Buffer.concat(splitLines(input).map(f))
const withNewline = (line: Buffer): Buffer => (line.at(-1) === 0x0a ? line : Buffer.concat([line, Buffer.from('\n')]))
const DICT = ['apple', 'ERROR', 'beta', '']
const lookupRef = perLine((line) => {
  const body = withNewline(line).subarray(0, -1)
  return Buffer.concat([Buffer.from(DICT.includes(body.toString('latin1')) ? '+ ' : '- '), body, Buffer.from('\n')])
})
const headRef = (n: number) => (input: Buffer) => Buffer.concat(splitLines(input).slice(0, n))
const chunkLengths = (length: number, size: number): number[] =>
  Array.from({ length: Math.ceil(length / size) }, (_, i) => Math.min(size, length - i * size))

/** Every guest under examples/, by path relative to it. A guest needing nothing special has `[{}]`. */
const GUESTS: Record<string, Variant[]> = {
  'counter-global.wasm': [{ chunkDependent: true, ref: (input, size) => counterGlobalRef(chunkLengths(input.length, size)) }],
  'grep.wasm': [{ options: { delimiter: '\n' }, stateless: true, ref: (input) => grepRef(input) }],
  'numberer.wasm': [{ ref: numbererRef }],
  'pass.wasm': [{ stateless: true, ref: passRef }],
  'upper-scalar.wasm': [{ stateless: true, ref: upperRef }],
  'upper.wasm': [{ stateless: true, ref: upperRef }],
  'wc.wasm': [{ ref: wcRef }],
  'guests/c/linenum.wasm': [{ text: true }],
  'guests/c-wasi/wordfreq.wasm': [{ text: true }],
  'wasi/cat.wasm': [{ ref: passRef }, { label: 'per record', options: record(), ref: passRef }],
  'wasi/counter.wasm': [
    { ref: (input) => Buffer.concat([Buffer.from('1\n'), input]) },
    { label: 'per record', options: record(), ref: perLine((line) => Buffer.concat([Buffer.from('1\n'), line])) },
  ],
  'wasi/escape.wasm': [{ options: { wasi: { args: ['escape'] } } }, { label: 'per record', options: record({ args: ['escape'] }) }],
  'wasi/fail.wasm': [{ runs: 3 }, { label: 'per record', options: record(), runs: 3 }],
  'wasi/grep.wasm': [
    { options: { wasi: { args: ['grep', 'ERROR'] } }, ref: (input) => grepRef(input) },
    { label: 'per record', options: record({ args: ['grep', 'ERROR'] }), ref: (input) => grepRef(input) },
  ],
  'wasi/head.wasm': [
    { options: { wasi: { args: ['head', '3'] } }, ref: headRef(3) },
    { label: 'per record', options: record({ args: ['head', '3'] }) },
  ],
  'wasi/lookup.wasm': [
    { text: true, options: { wasi: { args: ['lookup', '/data/dict.txt'], preopens: { '/data': '' } } }, ref: lookupRef },
    // Each record's run gets its own view of the granted directory: a few ms each.
    { label: 'per record', text: true, options: record({ args: ['lookup', '/data/dict.txt'], preopens: { '/data': '' } }), ref: lookupRef, runs: 4 },
  ],
  'wasi/upper.wasm': [{ ref: upperRef }, { label: 'per record', options: record(), ref: upperRef }],
  'wasi/wc.wasm': [{ ref: wcRef }, { label: 'per record', options: record(), ref: perLine(wcRef) }],
}

/** The .wasm files under examples/ (its subfolders too), relative to it: what must be covered. */
function exampleGuests(): string[] {
  const root = example('')
  const found: string[] = []
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name)
      if (entry.isDirectory() && entry.name !== 'node_modules') walk(path)
      else if (entry.isFile() && entry.name.endsWith('.wasm')) found.push(relative(root, path).split('\\').join('/'))
    }
  }
  walk(root)
  return found.sort()
}

/** The module with a custom section `name` appended (how a guest declares itself stateless). */
function withCustomSection(bytes: Buffer, name: string): Buffer {
  const nameBytes = Buffer.from(name)
  const payload = Buffer.concat([Buffer.from([nameBytes.length]), nameBytes])
  return Buffer.concat([bytes, Buffer.from([0, payload.length]), payload])
}

/** Output, or the error a mode failed with: failing the same way is agreeing too. */
type Outcome = { output: Buffer } | { error: string }

/** Far past what one small stream takes: a stream still unsettled by then hangs, a defect of its own. */
const HANG_MS = 20_000

async function outcomeOf(output: Promise<Buffer>, what: string): Promise<Outcome> {
  let timer: NodeJS.Timeout | undefined
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`hang: ${what} did not settle within ${HANG_MS} ms`)), HANG_MS)
  })
  try {
    return { output: await Promise.race([output, hang]) }
  } catch (err) {
    // Anything but a typed error is a defect in itself, whatever the other modes did.
    if (!(err instanceof WasmSandboxError)) throw err
    return { error: `${err.code} at offset ${err.offset}${err.exitCode === undefined ? '' : `, exit code ${err.exitCode}`}` }
  } finally {
    clearTimeout(timer)
  }
}

function describeOutcome(outcome: Outcome): string {
  return 'error' in outcome ? outcome.error : `${outcome.output.length} bytes`
}

/** Throws, saying where they part, unless the two outcomes are the same. */
function assertSame(got: Outcome, want: Outcome, what: string): void {
  if ('error' in got || 'error' in want) {
    assert.equal(describeOutcome(got), describeOutcome(want), what)
    return
  }
  const a = got.output
  const b = want.output
  if (a.equals(b)) return
  let at = 0
  while (at < a.length && at < b.length && a[at] === b[at]) at++
  const around = (buf: Buffer): string => JSON.stringify(buf.subarray(Math.max(0, at - 16), at + 16).toString('latin1'))
  assert.fail(`${what}: ${a.length} bytes against ${b.length}, first difference at byte ${at}: ${around(a)} against ${around(b)}`)
}

const WORDS = ['alpha', 'ERROR', 'beta', 'apple', 'x', 'ERR', 'OR', 'caf\u00e9', 'Tab\there', 'z'.repeat(40)]
const SEPARATORS = [' ', ' ', '\n', '\n', '\r\n', '  ', '\t', '\n\n']

/**
 * Lines of words: what every guest accepts. Up to `parts` words, about 6 KB for 600 (`size:
 * 'max'`: fast-check's default keeps arrays to a few items, too short for a checkpoint).
 */
const textInput = (parts: number): fc.Arbitrary<Buffer> =>
  fc
    .array(fc.tuple(fc.constantFrom(...WORDS), fc.constantFrom(...SEPARATORS)), { maxLength: parts, size: 'max' })
    .map((words) => Buffer.from(words.map(([w, s]) => w + s).join(''), 'utf8'))

/** Either text or any bytes (NULs, no newlines for long stretches, high bytes). */
const anyInput = (parts: number): fc.Arbitrary<Buffer> =>
  fc.oneof(
    { arbitrary: textInput(parts), weight: 3 },
    { arbitrary: fc.uint8Array({ maxLength: parts * 7, size: 'max' }).map((bytes) => Buffer.from(bytes)), weight: 1 },
  )

/** Text of about 1.2 KB, for the one run every guest gets first. */
const KNOWN_INPUT = Buffer.from(Array.from({ length: 160 }, (_, i) => WORDS[(i * 7) % WORDS.length]!.slice(0, 8) + SEPARATORS[i % SEPARATORS.length]).join(''))

/** Random sizes to cut the input into writes; each mode gets its own. */
const splits = fc.array(fc.integer({ min: 1, max: 3000 }), { minLength: 1, maxLength: 6 })

/**
 * Waits (up to a second) until a pooled stream's extra instances have started. They take a worker
 * only when one is free and are dropped once the input ends, so a small input written at once
 * would run on the first instance alone and the pool mode would test nothing.
 */
async function poolStarted(stream: SandboxStream, size: number): Promise<void> {
  const until = performance.now() + 1000
  while ((stream.metrics().concurrency?.instances ?? 0) < size && performance.now() < until) await delay(2)
}

type ModeName = 'inline' | 'worker' | 'pool' | 'resume'
const NUM_RUNS = 10

/** The modes a guest can run in: a WASI command needs a worker; only a stateless guest is pooled; a command over the whole stream cannot be checkpointed. */
function modesOf(guest: LoadedGuest, variant: Variant): ModeName[] {
  const command = guest.abi.kind === 'wasi-command'
  const perRecord = variant.options?.wasi?.mode === 'record'
  const modes: ModeName[] = []
  if (!command) modes.push('inline')
  modes.push('worker')
  if (perRecord || (!command && (variant.stateless || guest.stateless))) modes.push('pool')
  if (!command || perRecord) modes.push('resume')
  return modes
}

describe('differential: every example guest gives the same output in every mode', () => {
  before(() => {
    dataDir = mkdtempSync(join(tmpdir(), 'wasm-sandbox-diff-'))
    writeFileSync(join(dataDir, 'dict.txt'), DICT.slice(0, -1).join('\n') + '\n\n')
    for (const variants of Object.values(GUESTS)) {
      for (const v of variants) {
        const preopens = v.options?.wasi?.preopens
        if (preopens && '/data' in preopens) preopens['/data'] = dataDir
      }
    }
  })
  after(() => rmSync(dataDir, { recursive: true, force: true }))

  it('every example guest has an entry, and every entry a guest', () => {
    const found = exampleGuests()
    const missing = found.filter((name) => !(name in GUESTS))
    assert.deepEqual(missing, [], `examples without an entry in GUESTS (spec/differential.test.ts): add one, [{}] if it needs no options`)
    assert.deepEqual(Object.keys(GUESTS).filter((name) => !found.includes(name)), [], 'entries in GUESTS without their .wasm')
  })

  for (const [name, variants] of Object.entries(GUESTS)) {
    for (const variant of variants) {
      const title = `${name}${variant.label ? ` (${variant.label})` : ''}`
      it(`${title}: inline, worker, pool and resumed from a checkpoint agree`, async (t) => {
        const bytes = readFileSync(example(name))
        const guest = await loadGuest(bytes)
        const modes = modesOf(guest, variant)
        // A whole-stream WASI command runs only in a worker: then two runs, with other writes.
        const runs: ModeName[] = modes.length > 1 ? modes : [...modes, ...modes]
        const declared = variant.stateless && !guest.stateless ? withCustomSection(bytes, 'wasm-sandbox.stateless') : undefined
        const resumeFrom = modes.filter((m): m is Exclude<ModeName, 'resume'> => m !== 'resume')
        // A run per record costs a WASI instance per line: fewer lines.
        const parts = variant.options?.wasi?.mode === 'record' ? 100 : 600
        const numRuns = variant.runs ?? NUM_RUNS
        const base: SandboxOptions = { ...variant.options, ...(variant.chunkDependent ? { maxLatency: Infinity } : {}) }
        let resumedMidway = 0
        let pooled = 0
        let succeeded = 0

        /** Options for running in `mode` (one of inline, worker, pool). */
        const placed = (mode: Exclude<ModeName, 'resume'>, bufferSize: number, poolSize: number): SandboxOptions => ({
          ...base,
          bufferSize,
          ...(mode === 'inline' ? { isolation: 'inline' as const } : {}),
          ...(mode === 'pool' ? { maxConcurrency: poolSize, ...(variant.stateless ? { stateless: true } : {}) } : {}),
        })

        await fc.assert(
          fc.asyncProperty(
            variant.text ? textInput(parts) : anyInput(parts),
            // Small chunks, so a pool has many to spread over its instances.
            fc.integer({ min: 16, max: 512 }),
            fc.array(splits, { minLength: runs.length, maxLength: runs.length }),
            fc.record({
              poolSize: fc.integer({ min: 2, max: 3 }),
              declaredSection: fc.boolean(),
              // Per mille of the input (fc.double mostly gives 0 or 1).
              cut: fc.integer({ min: 0, max: 1000 }),
              every: fc.integer({ min: 1, max: 512 }),
              firstMode: fc.nat({ max: resumeFrom.length - 1 }),
              thenMode: fc.nat({ max: resumeFrom.length - 1 }),
            }),
            async (input, bufferSize, writes, r) => {
              const outcomes: [string, Outcome][] = []
              for (const [i, mode] of runs.entries()) {
                if (mode === 'resume') {
                  const first = resumeFrom[r.firstMode]!
                  const then = resumeFrom[r.thenMode]!
                  const cut = Math.floor((r.cut * input.length) / 1000)
                  const storage = new MemoryCheckpointStorage({ keep: 1 })
                  const checkpointing = { ...placed(first, bufferSize, r.poolSize), checkpoint: { storage, every: r.every } }
                  const stopped = wasmTransform(bytes, checkpointing)
                  if (first === 'pool') await poolStarted(stopped, r.poolSize)
                  const head = await outcomeOf(run(stopped, input.subarray(0, cut), writes[i]), `${first} run up to byte ${cut}`)
                  let outcome = head
                  if ('output' in head) {
                    // The first run stopped at `cut` (its flush output lies past the checkpoint and is cut off).
                    const checkpoint = await storage.loadLatest()
                    const from = checkpoint?.inputOffset ?? 0
                    if (from > 0) resumedMidway++
                    const rest = wasmTransform(bytes, { ...placed(then, bufferSize, r.poolSize), ...(checkpoint ? { resumeFrom: checkpoint } : {}) })
                    if (then === 'pool') await poolStarted(rest, r.poolSize)
                    const tail = await outcomeOf(run(rest, input.subarray(from), writes[i]), `${then} run resumed at byte ${from}`)
                    outcome = 'output' in tail ? { output: Buffer.concat([head.output.subarray(0, checkpoint?.outputOffset ?? 0), tail.output]) } : tail
                  }
                  outcomes.push([`resumed (${first} up to byte ${cut}, then ${then})`, outcome])
                  continue
                }
                const module = mode === 'pool' && declared && r.declaredSection ? declared : bytes
                const options = placed(mode, bufferSize, r.poolSize)
                if (module === declared) delete options.stateless
                const label = mode === 'pool' ? `pool of ${r.poolSize}${module === declared ? ', declared stateless by its section' : ''}` : mode
                const stream = wasmTransform(module, options)
                if (mode === 'pool') await poolStarted(stream, r.poolSize)
                outcomes.push([label, await outcomeOf(run(stream, input, writes[i]), label)])
                if (mode === 'pool' && (stream.metrics().concurrency?.instances ?? 1) > 1) pooled++
              }
              const [firstLabel, reference] = outcomes[0]!
              if ('output' in reference) succeeded++
              for (const [label, outcome] of outcomes.slice(1)) assertSame(outcome, reference, `${label} against ${firstLabel}`)
              if (variant.ref) assertSame(reference, { output: variant.ref(input, bufferSize) }, `${firstLabel} against the reference`)
            },
          ),
          {
            numRuns,
            // First a run known to resume past byte 0 and to pool (small chunks, a checkpoint due
            // at every chunk, the cut near the end), so the coverage checks below do not rest on chance.
            examples: [[KNOWN_INPUT, 32, runs.map(() => [100, 7]), { poolSize: 2, declaredSection: true, cut: 900, every: 1, firstMode: 0, thenMode: resumeFrom.length - 1 }]],
            includeErrorInReport: true,
            // A hang fails the run; shrinking it (another hang per step) is cut short.
            interruptAfterTimeLimit: 3 * HANG_MS,
            markInterruptAsFailure: true,
          },
        )
        t.diagnostic(`modes: ${runs.join(', ')}; ${succeeded} of ${numRuns} runs gave output; ${resumedMidway} resumed from a checkpoint past byte 0; ${pooled} pool runs had 2 instances or more`)
        // Without a resume past byte 0 the resume mode would be a plain second run.
        if (modes.includes('resume') && succeeded > numRuns / 2) assert.ok(resumedMidway > 0, 'no run resumed from a checkpoint: the resume mode tested nothing')
        // Extra instances start only if a worker is free at once: one may have run alone.
        if (modes.includes('pool') && succeeded > numRuns / 2) assert.ok(pooled > 0, 'no pool run had a second instance: the pool mode tested nothing')
      })
    }
  }
})
