import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { LOG_LEVELS } from '../guest/instance.js'
import type { RecoveryStrategy, SandboxOptions } from '../options.js'
import type { ProcessFileOptions } from '../api/process-file.js'

/** A mistake on the command line: exit status 2 and one line saying what to change. */
export class UsageError extends Error {}

/** What commander hands the run command: every value as typed, repeatable ones as lists. */
export interface RunFlags {
  output?: string
  bufferSize?: string
  delimiter?: string
  maxRecordSize?: string
  maxLatency?: string
  highWaterMark?: string
  inline?: boolean
  timeout?: string
  deadline?: string
  memory?: string
  maxOutput?: string
  maxModuleSize?: string
  loadTimeout?: string
  maxOutputPerChunk?: string
  recovery?: string
  stateless?: boolean
  maxConcurrency?: string
  maxInFlight?: string
  backpressure?: string
  sampleRate?: string
  maxDelay?: string
  checkpointDir?: string
  checkpointInterval?: string
  checkpointEvery?: string
  checkpointKeep?: string
  env?: string[]
  dir?: string[]
  dirRw?: string[]
  perRecord?: boolean
  config?: string
  configFile?: string
  log?: string
  quiet?: boolean
  stats?: boolean
}

/** Appends a repeated flag's values, for commander. */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value]
}

function unescape(s: string): string {
  return s.replace(/\\([nrt0\\])/g, (_, c: string) => ({ n: '\n', r: '\r', t: '\t', '0': '\0', '\\': '\\' })[c]!)
}

/** A whole number in decimal, or undefined when the flag was not given. */
export function integer(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  // Number() also takes '', ' 7', '0x10' and '1e3': a typo must not quietly become a size.
  if (!/^[0-9]+$/.test(value)) throw new UsageError(`${flag} takes a whole number in decimal, got ${JSON.stringify(value)}`)
  return Number(value)
}

function recovery(value: string | undefined): RecoveryStrategy | undefined {
  if (value === undefined) return undefined
  if (value === 'fail' || value === 'skip') return value
  const retry = /^retry=([0-9]+)$/.exec(value)
  if (retry && Number(retry[1]) >= 1 && Number(retry[1]) <= 100) return { retry: Number(retry[1]) }
  throw new UsageError(`--recovery takes fail, skip or retry=N (N from 1 to 100), got ${JSON.stringify(value)}`)
}

/** `--config text` or `--config-file path`: the bytes a v1.1 guest reads with `sandbox.config_read`. */
function guestConfig(flags: RunFlags): string | Uint8Array | undefined {
  if (flags.config !== undefined && flags.configFile !== undefined) throw new UsageError('--config and --config-file name the same thing: give one')
  if (flags.configFile === undefined) return flags.config
  try {
    return readFileSync(flags.configFile)
  } catch (err) {
    throw new UsageError(`--config-file ${flags.configFile}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
  }
}

/** `--log`: the most verbose level shown (an index in `LOG_LEVELS`), -1 for none. */
export function logLevel(value: string | undefined): number {
  if (value === undefined) return LOG_LEVELS.indexOf('warn')
  if (value === 'none') return -1
  const level = (LOG_LEVELS as readonly string[]).indexOf(value)
  if (level < 0) throw new UsageError(`--log takes none, ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(value)}`)
  return level
}

function concurrency(value: string | undefined): number | 'auto' | undefined {
  if (value === 'auto') return value
  if (value !== undefined && !/^[0-9]+$/.test(value)) throw new UsageError(`--max-concurrency takes a whole number or auto, got ${JSON.stringify(value)}`)
  return integer('--max-concurrency', value)
}

function oneOf<T extends string>(flag: string, value: string | undefined, allowed: readonly T[]): T | undefined {
  if (value === undefined) return undefined
  if ((allowed as readonly string[]).includes(value)) return value as T
  throw new UsageError(`${flag} takes ${allowed.join(', ')}, got ${JSON.stringify(value)}`)
}

/** Drops the keys whose value is undefined, so the library applies its defaults. */
function defined<T extends object>(object: T): T {
  return Object.fromEntries(Object.entries(object).filter(([, v]) => v !== undefined)) as T
}

/**
 * The library's options for the flags given. Only syntax is checked here; ranges and
 * combinations are the library's (`resolveOptions`), whose messages `inFlags` translates.
 */
export function sandboxOptions(flags: RunFlags): SandboxOptions {
  if (flags.delimiter === '') throw new UsageError('--delimiter must not be empty')
  const options: SandboxOptions = defined({
    bufferSize: flags.bufferSize === 'auto' ? ('auto' as const) : integer('--buffer-size', flags.bufferSize),
    guestConfig: guestConfig(flags),
    delimiter: flags.delimiter === undefined ? undefined : unescape(flags.delimiter),
    maxRecordSize: integer('--max-record-size', flags.maxRecordSize),
    maxLatency: integer('--max-latency', flags.maxLatency),
    highWaterMark: integer('--high-water-mark', flags.highWaterMark),
    isolation: flags.inline ? ('inline' as const) : undefined,
    maxConcurrency: concurrency(flags.maxConcurrency),
    backpressure: oneOf('--backpressure', flags.backpressure, ['block', 'drop', 'sample', 'adaptive'] as const),
    recoveryStrategy: recovery(flags.recovery),
    // --stateless / --no-stateless; neither: as the guest declares.
    stateless: flags.stateless,
    checkpointInterval: integer('--checkpoint-interval', flags.checkpointInterval),
  })
  options.limits = defined({
    timeout: integer('--timeout', flags.timeout),
    deadline: integer('--deadline', flags.deadline),
    memory: integer('--memory', flags.memory),
    maxOutput: integer('--max-output', flags.maxOutput),
    maxOutputPerChunk: integer('--max-output-per-chunk', flags.maxOutputPerChunk),
    moduleSize: integer('--max-module-size', flags.maxModuleSize),
    loadTimeout: integer('--load-timeout', flags.loadTimeout),
  })
  const flowControl = defined({
    sampleRate: integer('--sample-rate', flags.sampleRate),
    maxDelay: integer('--max-delay', flags.maxDelay),
    maxInFlight: integer('--max-in-flight', flags.maxInFlight),
  })
  if (Object.keys(flowControl).length > 0) options.flowControl = flowControl
  options.wasi = wasiOptions(flags)
  return options
}

/** The WASI grants on the command line; a module that is not a WASI program ignores them. */
function wasiOptions(flags: RunFlags): NonNullable<SandboxOptions['wasi']> {
  const env: Record<string, string> = {}
  for (const pair of flags.env ?? []) {
    const eq = pair.indexOf('=')
    if (eq < 1) throw new UsageError(`--env takes NAME=value, got ${JSON.stringify(pair)}`)
    env[pair.slice(0, eq)] = pair.slice(eq + 1)
  }
  const preopens: Record<string, { path: string; writable: boolean }> = {}
  const grant = (flag: string, spec: string, writable: boolean): void => {
    const [host, guest] = spec.split('::') as [string, string | undefined]
    if (!host) throw new UsageError(`${flag} takes host[::guest], got ${JSON.stringify(spec)}`)
    preopens[guest ?? resolve(host)] = { path: host, writable }
  }
  for (const spec of flags.dir ?? []) grant('--dir', spec, false)
  for (const spec of flags.dirRw ?? []) grant('--dir-rw', spec, true)
  return { env, preopens, stderr: process.stderr, ...(flags.perRecord ? { mode: 'record' as const } : {}) }
}

/** `processFile`'s checkpoint options for `--checkpoint-dir` and its companions. */
export function checkpointOptions(flags: RunFlags): NonNullable<ProcessFileOptions['checkpoint']> | undefined {
  const companions = [
    ['--checkpoint-every', flags.checkpointEvery],
    ['--checkpoint-keep', flags.checkpointKeep],
  ] as const
  if (flags.checkpointDir === undefined) {
    const stray = companions.find(([, value]) => value !== undefined)
    if (stray) throw new UsageError(`${stray[0]} needs --checkpoint-dir`)
    return undefined
  }
  if (flags.checkpointDir === '') throw new UsageError('--checkpoint-dir needs a directory name')
  const keep = integer('--checkpoint-keep', flags.checkpointKeep)
  if (keep === 0) throw new UsageError('--checkpoint-keep must be at least 1')
  return defined({
    dir: flags.checkpointDir,
    every: integer('--checkpoint-every', flags.checkpointEvery),
    keep,
  })
}

const FLAG_OF: Record<string, string> = {
  bufferSize: '--buffer-size',
  maxLatency: '--max-latency',
  maxRecordSize: '--max-record-size',
  delimiter: '--delimiter',
  highWaterMark: '--high-water-mark',
  maxConcurrency: '--max-concurrency',
  recoveryStrategy: '--recovery',
  checkpointInterval: '--checkpoint-interval',
  'checkpoint.interval': '--checkpoint-interval',
  'checkpoint.every': '--checkpoint-every',
  'limits.timeout': '--timeout',
  'limits.deadline': '--deadline',
  'limits.memory': '--memory',
  'limits.maxOutputPerChunk': '--max-output-per-chunk',
  'limits.maxOutput': '--max-output',
  'limits.moduleSize': '--max-module-size',
  'limits.loadTimeout': '--load-timeout',
  'flowControl.sampleRate': '--sample-rate',
  'flowControl.maxDelay': '--max-delay',
  'flowControl.maxInFlight': '--max-in-flight',
  guestConfig: '--config',
}

/** Whole phrases first: a WASI grant is one flag or another depending on the message. */
const PHRASES: [RegExp, string][] = [
  [/wasi\.preopens: a writable grant needs wasi\.mode 'stream' \(([^)]*)\)/g, '--dir-rw cannot go with --per-record ($1)'],
  [/wasi\.preopens\['([^']*)'\]/g, '--dir (guest path $1)'],
  [/wasi\.preopens\b/g, '--dir'],
  [/\bstateless: true\b/g, '--stateless'],
  [/\bstateless: false\b/g, '--no-stateless'],
  [/it needs isolation 'worker'/g, 'it cannot go with --inline'],
]

/** The names, longest first, as whole words only (not the 'delimiter' inside '--delimiter'). */
const NAMES = new RegExp(
  `(?<![\\w.-])(?:${Object.keys(FLAG_OF)
    .sort((a, b) => b.length - a.length)
    .map((k) => k.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
    .join('|')})(?![\\w])`,
  'g',
)

/** The library's messages name its options; the user typed flags. */
export function inFlags(message: string): string {
  const phrased = PHRASES.reduce((text, [pattern, replacement]) => text.replace(pattern, replacement), message)
  return phrased.replace(NAMES, (name) => FLAG_OF[name]!)
}
