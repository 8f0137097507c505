import { errors } from './errors.js'

export type BackpressureStrategy = 'block' | 'drop' | 'sample' | 'adaptive'
export type RecoveryStrategy = 'fail' | 'skip' | { retry: number }
export type Isolation = 'inline' | 'worker'

export interface FlowControlOptions {
  /** Bytes buffered downstream above which a lossy strategy starts shedding. */
  highWaterMark?: number
  /** Bytes buffered downstream below which a lossy strategy stops shedding. */
  lowWaterMark?: number
  /** Chunks that may be in flight to the guest at once. */
  maxInFlight?: number
  /** With `backpressure: 'sample'`, pass one chunk in `sampleRate` while under pressure. */
  sampleRate?: number
}

export interface SandboxOptions {
  /** Chunk size handed to the guest, in bytes. Default 64 KiB. */
  bufferSize?: number
  /** Split on this delimiter so that no record is cut in two (e.g. `'\n'`). */
  delimiter?: string | Uint8Array
  /** With `delimiter`, the longest record accepted, in bytes. Default max(16 × bufferSize, 1 MiB). */
  maxRecordSize?: number
  /** Bytes each stage buffers before it applies backpressure. Default `bufferSize`. */
  highWaterMark?: number
  /** Chunks in flight to one guest at once (worker isolation). Default 2. */
  maxConcurrency?: number
  /** What to do when downstream is slower than the source. Only `'block'` is implemented in 0.1. */
  backpressure?: BackpressureStrategy
  /** Milliseconds between checkpoints. Typed now; checkpoints arrive in a later release. */
  checkpointInterval?: number
  /** What to do when the guest fails on a chunk. Only `'fail'` is implemented in 0.1. */
  recoveryStrategy?: RecoveryStrategy
  flowControl?: FlowControlOptions
}

export interface ResolvedOptions {
  bufferSize: number
  delimiter: Buffer | undefined
  maxRecordSize: number
  highWaterMark: number
  maxConcurrency: number
  backpressure: BackpressureStrategy
  checkpointInterval: number
  recoveryStrategy: RecoveryStrategy
  flowControl: Required<FlowControlOptions>
}

export const DEFAULT_BUFFER_SIZE = 64 * 1024

const KNOWN_KEYS = new Set<string>([
  'bufferSize',
  'delimiter',
  'maxRecordSize',
  'highWaterMark',
  'maxConcurrency',
  'backpressure',
  'checkpointInterval',
  'recoveryStrategy',
  'flowControl',
])
const FLOW_KEYS = new Set<string>(['highWaterMark', 'lowWaterMark', 'maxInFlight', 'sampleRate'])

function positiveInt(name: string, value: unknown, fallback: number, max = 2 ** 31 - 1): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > max) {
    throw errors.invalidOption(`${name} must be an integer from 1 to ${max}, got ${String(value)}`)
  }
  return value
}

function rejectUnknown(where: string, obj: object, known: Set<string>): void {
  const unknown = Object.keys(obj).filter((k) => !known.has(k))
  if (unknown.length > 0) {
    throw errors.invalidOption(
      `Unknown ${where}: ${unknown.join(', ')}. Known ones are ${[...known].join(', ')}.`,
    )
  }
}

function resolveDelimiter(value: unknown): Buffer | undefined {
  if (value === undefined) return undefined
  if (typeof value === 'string' && value.length > 0) return Buffer.from(value, 'utf8')
  if (value instanceof Uint8Array && value.length > 0) return Buffer.from(value)
  throw errors.invalidOption('delimiter must be a non-empty string or Uint8Array')
}

function resolveRecovery(value: unknown): RecoveryStrategy {
  if (value === undefined || value === 'fail') return 'fail'
  if (value === 'skip' || (typeof value === 'object' && value !== null && 'retry' in value)) {
    throw errors.invalidOption(
      `recoveryStrategy ${JSON.stringify(value)} is not implemented in this release; only 'fail' is.`,
    )
  }
  throw errors.invalidOption(`recoveryStrategy must be 'fail', 'skip' or { retry: n }, got ${JSON.stringify(value)}`)
}

function resolveBackpressure(value: unknown): BackpressureStrategy {
  if (value === undefined || value === 'block') return 'block'
  if (value === 'drop' || value === 'sample' || value === 'adaptive') {
    throw errors.invalidOption(
      `backpressure '${value}' is not implemented in this release; only 'block' (native backpressure) is.`,
    )
  }
  throw errors.invalidOption(`backpressure must be 'block', 'drop', 'sample' or 'adaptive', got ${JSON.stringify(value)}`)
}

function resolveFlowControl(value: unknown, highWaterMark: number, maxConcurrency: number): Required<FlowControlOptions> {
  const flow = (value ?? {}) as FlowControlOptions
  if (typeof flow !== 'object' || flow === null) throw errors.invalidOption('flowControl must be an object')
  rejectUnknown('flowControl option', flow, FLOW_KEYS)
  const hwm = positiveInt('flowControl.highWaterMark', flow.highWaterMark, highWaterMark)
  const lwm = flow.lowWaterMark === undefined ? Math.floor(hwm / 2) : flow.lowWaterMark
  if (!Number.isInteger(lwm) || lwm < 0 || lwm > hwm) {
    throw errors.invalidOption(`flowControl.lowWaterMark must be an integer from 0 to highWaterMark (${hwm})`)
  }
  return {
    highWaterMark: hwm,
    lowWaterMark: lwm,
    maxInFlight: positiveInt('flowControl.maxInFlight', flow.maxInFlight, maxConcurrency, 1024),
    sampleRate: positiveInt('flowControl.sampleRate', flow.sampleRate, 10),
  }
}

/** Validates user options once, up front, so a typo fails loudly instead of being ignored. */
export function resolveOptions(options: SandboxOptions = {}): ResolvedOptions {
  if (typeof options !== 'object' || options === null) throw errors.invalidOption('options must be an object')
  rejectUnknown('option', options, KNOWN_KEYS)
  const bufferSize = positiveInt('bufferSize', options.bufferSize, DEFAULT_BUFFER_SIZE, 1024 * 1024 * 1024)
  const highWaterMark = positiveInt('highWaterMark', options.highWaterMark, bufferSize)
  const maxConcurrency = positiveInt('maxConcurrency', options.maxConcurrency, 2, 1024)
  const delimiter = resolveDelimiter(options.delimiter)
  const maxRecordSize = positiveInt(
    'maxRecordSize',
    options.maxRecordSize,
    Math.max(16 * bufferSize, 1024 * 1024),
    1024 * 1024 * 1024,
  )
  if (maxRecordSize < bufferSize) {
    throw errors.invalidOption(`maxRecordSize (${maxRecordSize}) must be at least bufferSize (${bufferSize})`)
  }
  return {
    bufferSize,
    delimiter,
    maxRecordSize,
    highWaterMark,
    maxConcurrency,
    backpressure: resolveBackpressure(options.backpressure),
    checkpointInterval: positiveInt('checkpointInterval', options.checkpointInterval, 5000),
    recoveryStrategy: resolveRecovery(options.recoveryStrategy),
    flowControl: resolveFlowControl(options.flowControl, highWaterMark, maxConcurrency),
  }
}
