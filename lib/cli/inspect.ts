import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { wasmTransform } from '../api/wasm-transform.js'
import { errors, isWasmSandboxError } from '../errors.js'
import { validateAbi, type GuestAbi } from '../guest/abi.js'
import { parseModule, PAGE_SIZE, type FuncType, type MemoryLimits, type ModuleInfo } from '../guest/binary.js'
import { loadGuest } from '../runners/guest-loader.js'
import { DEFAULT_LIMITS, resolveOptions } from '../options.js'
import { inFlags, integer } from './options.js'
import { formatBytes } from './progress.js'
import { EXIT } from './report.js'

export interface InspectFlags {
  json?: boolean
  probe: boolean
  memory?: string
  timeout?: string
}

type Kind = 'abi-v1' | 'wasi-reactor' | 'wasi-command'

export interface InspectReport {
  module: string
  size: number
  sha256: string
  /** Undefined when the module was refused before its kind could be told. */
  kind: Kind | undefined
  /** For a guest driven through process_chunk: 'v1.1' when it imports config or log (docs/abi.md). */
  abi: 'v1' | 'v1.1' | undefined
  imports: { module: string; name: string; kind: string; type?: string }[]
  exports: { name: string; kind: string; type?: string }[]
  memory: {
    /** Where the guest's memory comes from; 'none' for a module without one. */
    source: 'exported' | 'imported' | 'none'
    initialPages: number
    maximumPages: number | null
    shared: boolean
    /** The cap the sandbox writes into the binary (`--memory`). */
    limitBytes: number
  }
  mutableGlobals: number
  startFunction: boolean
  stateless: {
    /** What a probe run found (or why there is no answer). */
    verdict: 'yes' | 'no' | 'unknown' | 'not applicable'
    reason: string
    /** The module carries a `wasm-sandbox.stateless` custom section (docs/abi.md). */
    declared: boolean
  }
  accepted: boolean
  refused?: { code: string; message: string }
}

function signature(type: FuncType | undefined): string | undefined {
  return type && `(${type.params.join(', ')}) -> (${type.results.join(', ')})`
}

function kindOf(abi: GuestAbi): Kind {
  if (abi.kind === 'wasi-command') return 'wasi-command'
  return abi.wasiImports.length > 0 || abi.hasInitialize ? 'wasi-reactor' : 'abi-v1'
}

function memoryOf(info: ModuleInfo | undefined, limitBytes: number): InspectReport['memory'] {
  const imported = info?.imports.find((i) => i.kind === 'memory')?.memory
  const defined: MemoryLimits | undefined = info?.memories[0]
  const memory = imported ?? defined
  return {
    source: imported ? 'imported' : defined ? 'exported' : 'none',
    initialPages: memory?.initial ?? 0,
    maximumPages: memory?.maximum ?? null,
    shared: memory?.shared ?? false,
    limitBytes,
  }
}

/** Two chunks of probe input, of equal length, lines as most text guests expect them. */
const PROBE_A = Buffer.from('ERROR one,alpha,1\nsecond,beta,2\n')
const PROBE_B = Buffer.from('third,gamma,3\nERROR four,delta4\n')

async function runProbe(module: string, chunks: Buffer[], memory: number, timeout: number): Promise<Buffer> {
  const out: Buffer[] = []
  await pipeline(
    Readable.from(chunks),
    wasmTransform(module, { bufferSize: PROBE_A.length, maxLatency: Infinity, limits: { memory, timeout } }),
    new Writable({
      write(chunk: Buffer, _encoding, callback) {
        out.push(chunk)
        callback()
      },
    }),
  )
  return Buffer.concat(out)
}

/**
 * Whether a chunk's output depends on that chunk alone. Four fresh instances: no input (E),
 * A alone (Q), B alone (R), A then B (P). A stateless guest writes what `init` writes (i), then
 * f(chunk) per chunk, then what `flush` writes (fl): E = i·fl, Q = i·f(A)·fl, R = i·f(B)·fl and
 * P = i·f(A)·f(B)·fl. If no split of E into i and fl explains P from Q and R, the output for B
 * depended on A. A probe that passes is evidence, not proof: other input may tell otherwise.
 */
async function probeStateless(module: string, memory: number, timeout: number): Promise<Omit<InspectReport['stateless'], 'declared'>> {
  let e: Buffer, q: Buffer, r: Buffer, p: Buffer
  try {
    e = await runProbe(module, [], memory, timeout)
    q = await runProbe(module, [PROBE_A], memory, timeout)
    r = await runProbe(module, [PROBE_B], memory, timeout)
    p = await runProbe(module, [PROBE_A, PROBE_B], memory, timeout)
  } catch (err) {
    const what = isWasmSandboxError(err) ? `${err.code}: ${inFlags(err.message)}` : (err as Error).message
    return { verdict: 'unknown', reason: `the guest failed on the probe input (${what})` }
  }
  for (let k = 0; k <= e.length; k++) {
    const init = e.subarray(0, k)
    const flush = e.subarray(k)
    const middle = (whole: Buffer): Buffer | undefined =>
      whole.length >= e.length && whole.subarray(0, k).equals(init) && whole.subarray(whole.length - flush.length).equals(flush)
        ? whole.subarray(k, whole.length - flush.length)
        : undefined
    const fa = middle(q)
    const fb = middle(r)
    if (fa && fb && p.equals(Buffer.concat([init, fa, fb, flush]))) {
      return {
        verdict: 'yes',
        reason: 'on a probe, the output for a chunk depended on that chunk alone (evidence, not proof: --stateless is your promise)',
      }
    }
  }
  return {
    verdict: 'no',
    reason: 'on a probe, the output for a chunk depended on the chunks before it (or the guest is not deterministic)',
  }
}

/** What `inspect` finds; throws only when the module cannot be read at all. */
export async function inspectModule(path: string, flags: InspectFlags): Promise<InspectReport> {
  const memoryLimit = integer('--memory', flags.memory) ?? DEFAULT_LIMITS.memory
  const timeout = integer('--timeout', flags.timeout) ?? DEFAULT_LIMITS.timeout
  resolveOptions({ limits: { memory: memoryLimit, timeout } })
  const bytes = await readFile(path).catch((err: unknown) => {
    throw errors.moduleNotFound(path, err)
  })
  const report: InspectReport = {
    module: path,
    size: bytes.length,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    kind: undefined,
    abi: undefined,
    imports: [],
    exports: [],
    memory: memoryOf(undefined, memoryLimit),
    mutableGlobals: 0,
    startFunction: false,
    stateless: { verdict: 'unknown', reason: 'the module was refused', declared: false },
    accepted: false,
  }
  try {
    const info = parseModule(bytes, path)
    report.imports = info.imports.map((i) => ({ module: i.module, name: i.name, kind: i.kind, ...(i.funcType ? { type: signature(i.funcType)! } : {}) }))
    report.exports = info.exports.map((x) => ({ name: x.name, kind: x.kind, ...(x.funcType ? { type: signature(x.funcType)! } : {}) }))
    report.memory = memoryOf(info, memoryLimit)
    report.mutableGlobals = info.globals.filter((g) => g.mutable).length
    report.startFunction = info.hasStart
    const abi = validateAbi(info, path)
    report.kind = kindOf(abi)
    if (report.kind !== 'wasi-command') {
      report.abi = info.imports.some((i) => i.module === 'sandbox' && V11_IMPORTS.has(i.name)) ? 'v1.1' : 'v1'
    }
    // What the loader does on top: the memory cap written into the binary, and compilation.
    const guest = await loadGuest(path, { memoryLimit })
    report.stateless.declared = guest.stateless
    report.accepted = true
  } catch (err) {
    if (!isWasmSandboxError(err)) throw err
    report.refused = { code: err.code, message: err.message }
    return report
  }
  const { declared } = report.stateless
  if (report.kind === 'wasi-command') {
    report.stateless = {
      verdict: 'not applicable',
      reason: 'a WASI command runs once over the whole stream (with --per-record, a fresh run per record)',
      declared,
    }
  } else if (!flags.probe) {
    report.stateless = { verdict: 'unknown', reason: 'not probed (--no-probe)', declared }
  } else {
    report.stateless = { ...(await probeStateless(path, memoryLimit, timeout)), declared }
  }
  return report
}

/** The imports ABI v1.1 added (docs/abi.md#abi-v11-configuration-logging-backtraces). */
const V11_IMPORTS = new Set(['config_size', 'config_read', 'log'])

const KIND_TEXT: Record<Kind, string> = {
  'abi-v1': 'ABI v1 guest: the host calls process_chunk on each chunk (docs/abi.md)',
  'wasi-reactor': 'ABI v1 guest built as a WASI reactor (wasi-libc): process_chunk on each chunk, WASI calls allowed',
  'wasi-command': "WASI command: a program run as it is, its stdin the input and its stdout the output",
}

function pages(n: number): string {
  return `${n} page${n === 1 ? '' : 's'} (${formatBytes(n * PAGE_SIZE)})`
}

/** What the module says of itself, and what that means for a run. */
function declaration(r: InspectReport): string[] {
  const { declared, verdict } = r.stateless
  if (r.kind === 'wasi-command' || !r.accepted) return []
  return [declarationLine(declared, verdict)]
}

function declarationLine(declared: boolean, verdict: InspectReport['stateless']['verdict']): string {
  if (declared && verdict === 'no') return 'declared stateless (wasm-sandbox.stateless section), which the probe contradicts: run it with --no-stateless'
  if (declared) return 'declared stateless (wasm-sandbox.stateless section): --max-concurrency may pool it'
  if (verdict === 'yes') return 'not declared: --stateless lets --max-concurrency pool it and recovery restart it from init'
  return 'not declared'
}

/** The report as a person reads it: one field a line, continued lines indented. */
export function formatReport(r: InspectReport): string {
  const lines: string[] = []
  const field = (name: string, values: string[]): void => {
    values.forEach((value, i) => lines.push(`${i === 0 ? name.padEnd(11) : ' '.repeat(11)}${value}`))
  }
  field('module', [`${r.module} (${formatBytes(r.size)}, sha256 ${r.sha256.slice(0, 16)}…)`])
  const kind = r.kind ? KIND_TEXT[r.kind] : 'unknown (refused before it could be told)'
  field('kind', [r.abi === 'v1.1' ? kind.replace('ABI v1 guest', 'ABI v1.1 guest') : kind])
  field('imports', r.imports.length ? r.imports.map((i) => `${i.module}.${i.name}: ${i.kind}${i.type ? ` ${i.type}` : ''}`) : ['none'])
  field('exports', r.exports.length ? r.exports.map((x) => `${x.name}: ${x.kind}${x.type ? ` ${x.type}` : ''}`) : ['none'])
  const m = r.memory
  field('memory', [
    m.source === 'none'
      ? 'none'
      : `${m.source}, ${pages(m.initialPages)} initially, ` +
        `${m.maximumPages === null ? 'no maximum declared' : `at most ${pages(m.maximumPages)}`}${m.shared ? ', shared' : ''}; ` +
        `capped at ${formatBytes(m.limitBytes)} when run (--memory)`,
  ])
  field('globals', [
    `${r.mutableGlobals} mutable${r.mutableGlobals && r.kind !== 'wasi-command' ? ' (captured with the memory in checkpoints)' : ''}${r.startFunction ? '; a start function runs when it is instantiated' : ''}`,
  ])
  field('stateless', [`${r.stateless.verdict}: ${r.stateless.reason}`, ...declaration(r)])
  field('verdict', [r.accepted ? 'accepted' : `refused: ${r.refused!.code}: ${inFlags(r.refused!.message)}`])
  return lines.join('\n') + '\n'
}

/** The `inspect` command: prints the report; exits 1 when the module would be refused. */
export async function inspect(path: string, flags: InspectFlags): Promise<number> {
  const report = await inspectModule(path, flags)
  process.stdout.write(flags.json ? JSON.stringify(report, null, 2) + '\n' : formatReport(report))
  return report.accepted ? EXIT.ok : EXIT.failed
}
