import '../wasm-globals.js'
import { errors, WasmSandboxError, type GuestSite } from '../errors.js'
import { wasmBacktrace } from './backtrace.js'
import { PAGE_SIZE } from './binary.js'
import { readRefusal } from './grow-hook.js'
import type { GuestState } from '../checkpoint/types.js'
import type { LoadedGuest } from './load.js'

/**
 * Receives each range the guest emits, as a view of guest memory: the receiver must copy
 * `[start, start + length)` out before returning (into a Buffer inline, into the ring in a worker),
 * so output is copied exactly once on its way out of the guest.
 */
export type OutputSink = (memory: Uint8Array, start: number, length: number) => void

/** The inline sink: copies each emitted range into a Buffer of its own. */
export function bufferSink(deliver: (chunk: Buffer) => unknown): OutputSink {
  return (memory, start, length) => {
    const out = Buffer.allocUnsafe(length)
    out.set(memory.subarray(start, start + length))
    deliver(out)
  }
}

/** `sandbox.log` levels (ABI v1.1), by number: 0 error, 1 warn, 2 info, 3 debug. */
export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const
export type GuestLogLevel = (typeof LOG_LEVELS)[number]

/**
 * What `sandbox.log` may send per guest call (`init`, each `process_chunk`, `flush`): a longer
 * message is cut (at a UTF-8 character boundary), and a message past either count is dropped,
 * counted, and reported once when the call returns. So a guest that logs in a loop costs the
 * host a bounded amount per chunk, however long it loops.
 */
export const LOG_LIMITS = { messageBytes: 1024, messagesPerCall: 32, bytesPerCall: 8 * 1024 } as const

/**
 * Receives the log messages that pass `LOG_LIMITS`. Like an `OutputSink`, `message` gets a view
 * of guest memory to copy `[start, start + length)` out of before returning; `site` is reused
 * and must be read, not kept.
 */
export interface LogSink {
  /** `level` is 0..3 (LOG_LEVELS); `cutFrom` is the length the guest gave when the message was cut, else 0. */
  message(level: number, memory: Uint8Array, start: number, length: number, cutFrom: number, site: GuestSite): void
  /** `messages` log calls of the call at `site` were over the limits and dropped. */
  dropped(messages: number, site: GuestSite): void
}

/** What ABI v1.1 gives a guest beyond v1; both optional. */
export interface GuestServices {
  /** The bytes `sandbox.config_read` copies out (`guestConfig`); none: `config_size()` is 0. */
  config?: Uint8Array | undefined
  /** Where `sandbox.log` messages go; none: they are checked and discarded. */
  log?: LogSink | undefined
}

/** A `sandbox.log` message as the host hands it on: the stream's `'log'` event, and `debug`. */
export interface GuestLogEntry {
  level: GuestLogLevel
  /** The guest's bytes as UTF-8 (invalid sequences become U+FFFD), at most LOG_LIMITS.messageBytes. */
  message: string
  module: string
  /** The guest call that logged it (`init`, `process_chunk`, `flush`, ...). */
  exportName: string
  /** Input offset of the chunk being processed (of the end of input in `flush`). */
  offset: number
  /** Set when the message was cut: the length in bytes the guest gave. */
  truncatedFrom?: number
  /** Set on the host's own `'warn'` entry: how many messages of that call the limits dropped. */
  dropped?: number
}

/** An entry for a message; `bytes` is a copy (TextDecoder refuses views of shared memory). */
export function logEntry(level: number, bytes: Uint8Array, cutFrom: number, site: GuestSite): GuestLogEntry {
  const entry: GuestLogEntry = {
    level: LOG_LEVELS[level] ?? 'debug',
    message: utf8.decode(bytes),
    module: site.module,
    exportName: site.exportName,
    offset: site.offset,
  }
  if (cutFrom > 0) entry.truncatedFrom = cutFrom
  return entry
}

/** The host's entry for messages the limits dropped in one call. */
export function droppedEntry(messages: number, site: GuestSite): GuestLogEntry {
  const { messagesPerCall, bytesPerCall } = LOG_LIMITS
  return {
    level: 'warn',
    message: `${messages} log message${messages === 1 ? ' was' : 's were'} dropped: one guest call may log at most ${messagesPerCall} messages and ${bytesPerCall} bytes`,
    module: site.module,
    exportName: site.exportName,
    offset: site.offset,
    dropped: messages,
  }
}

export interface InstanceLimits {
  /** Bytes the guest may emit for one chunk (or for `flush`). `undefined`: 16 × the chunk size + 1 MiB. */
  maxOutputPerChunk: number | undefined
  /** Bytes the guest may emit over the whole stream. */
  maxOutput: number
  /**
   * Memory cap in bytes, checked after each call. Only needed for a guest whose binary could not
   * be rewritten (a precompiled WebAssembly.Module); a rewritten one cannot grow past its cap.
   */
  memory?: number | undefined
}

export const NO_LIMITS: InstanceLimits = { maxOutputPerChunk: Infinity, maxOutput: Infinity }

/** The default cap on one chunk's output: generous for expanders, fatal for output bombs. */
export function defaultChunkOutputLimit(chunkBytes: number): number {
  return 16 * chunkBytes + 1024 * 1024
}

interface GuestExports {
  memory?: WebAssembly.Memory
  alloc: (len: number) => number
  process_chunk: (ptr: number, len: number) => number
  init?: () => number
  flush?: () => number
  _initialize?: () => void
}

/**
 * The WASI side of a guest built with wasi-libc: its imports (given the guest's memory once it
 * exists) and a hook to run once the instance does. Built by `lib/wasi/reactor.ts`.
 */
export interface GuestWasi {
  /** The WASI import modules (a plain object, so these declarations need no DOM types). */
  imports(memory: () => WebAssembly.Memory): Record<string, object>
  attach(instance: WebAssembly.Instance): void
}

const MAX_FAIL_MESSAGE = 4096
const utf8 = new TextDecoder('utf-8', { fatal: false })
const NO_CONFIG = new Uint8Array(0)

/**
 * One live instance of a guest, driven through ABI v1. This is the per-chunk hot path: it keeps
 * one input region and one view of guest memory, refreshing the view only after the memory
 * grew, and allocates nothing per chunk but the output buffers it hands to the sink.
 *
 * Any failure marks the instance broken; a broken instance is never called again.
 */
export class GuestInstance {
  broken = false
  private readonly guest: LoadedGuest
  private readonly sink: OutputSink
  private readonly limits: InstanceLimits
  private readonly exports: GuestExports
  private readonly memory: WebAssembly.Memory
  private view: Uint8Array
  private region = 0
  private regionSize = 0
  private chunkOutput = 0
  private chunkOutputLimit = 0
  private totalOutput = 0
  private failMessage: string | undefined = undefined
  /** An abuse detected inside an import; it outranks whatever the unwinding guest throws. */
  private failure: WasmSandboxError | undefined = undefined
  /** Reused for every call, so the hot path builds no site objects. */
  private readonly site: GuestSite
  /** The cap is checked after each call only when the binary could not carry it. */
  private readonly checkMemory: boolean
  private readonly config: Uint8Array
  private readonly logSink: LogSink | undefined
  /** `sandbox.log` use in the current call, against LOG_LIMITS. */
  private logCount = 0
  private logBytes = 0
  private logDropped = 0
  /** The grow hook's record (grow-hook.ts): a refused `memory.grow` in the current call. */
  private readonly growRecord: WebAssembly.Global | undefined

  constructor(guest: LoadedGuest, sink: OutputSink, limits: InstanceLimits = NO_LIMITS, wasi?: GuestWasi, services: GuestServices = {}) {
    this.guest = guest
    this.sink = sink
    this.limits = limits
    this.config = services.config ?? NO_CONFIG
    this.logSink = services.log
    this.site = { module: guest.name, exportName: 'start', offset: 0 }
    // Also for a guest loaded earlier with a looser cap (`loadGuest`) than this stream's limit.
    this.checkMemory = limits.memory !== undefined && (guest.memoryLimit === undefined || guest.memoryLimit > limits.memory)
    const imported = guest.abi.importedMemory ? this.createImportedMemory() : undefined
    let memory: WebAssembly.Memory | undefined
    const imports = {
      ...wasi?.imports(() => memory!),
      sandbox: { emit: this.emit, fail: this.fail, config_size: this.configSize, config_read: this.configRead, log: this.log },
    } as WebAssembly.Imports
    if (imported) imports.env = { memory: imported }
    let instance: WebAssembly.Instance
    try {
      instance = new WebAssembly.Instance(guest.module, imports)
    } catch (err) {
      throw err instanceof WebAssembly.LinkError
        ? errors.invalidModule(guest.name, `cannot instantiate: ${err.message}`, err)
        : this.classify(err)
    }
    this.exports = instance.exports as unknown as GuestExports
    this.memory = memory = imported ?? this.exports.memory!
    this.growRecord = guest.growHook ? (instance.exports[guest.growHook.record] as WebAssembly.Global) : undefined
    wasi?.attach(instance)
    this.view = new Uint8Array(this.memory.buffer)
  }

  /** Calls the guest's `_initialize` (a WASI reactor's libc set-up), then its `init`, if it has them. */
  init(): void {
    const initialize = this.exports._initialize
    if (initialize) this.callExport('_initialize', initialize as () => number, 0, 0, 0)
    const init = this.exports.init
    if (!init) return
    this.chunkOutput = 0
    this.chunkOutputLimit = this.limits.maxOutputPerChunk ?? defaultChunkOutputLimit(0)
    this.callStatus('init', init, 0, 0, 0)
  }

  /** Has the guest allocate its input region for chunks of up to `length` bytes. */
  reserve(length: number): void {
    if (length > this.regionSize) this.allocRegion(length)
  }

  /** Copies `chunk` into the guest's input region and runs `process_chunk` on it. */
  process(chunk: Uint8Array, offset: number): void {
    const ptr = this.inputRegion(chunk.length, offset)
    this.view.set(chunk, ptr)
    this.processRegion(chunk.length, offset)
  }

  /**
   * Makes room for `length` input bytes and returns their address in `memoryView()`, for a
   * caller that copies the chunk in itself (the worker copies straight from its ring).
   */
  inputRegion(length: number, offset: number): number {
    this.site.offset = offset
    if (length > this.regionSize) this.allocRegion(length)
    const view = this.currentView()
    if (this.region + length > view.length) {
      throw this.abort(errors.outOfBounds(this.site, 'input region', this.region, length, view.length))
    }
    return this.region
  }

  /** Runs `process_chunk` over the `length` bytes already in the input region. */
  processRegion(length: number, offset: number): void {
    this.chunkOutput = 0
    this.chunkOutputLimit = this.limits.maxOutputPerChunk ?? defaultChunkOutputLimit(length)
    this.callStatus('process_chunk', this.exports.process_chunk, this.region, length, offset)
  }

  /** The current view of guest memory (valid until the guest next runs). */
  memoryView(): Uint8Array {
    return this.currentView()
  }

  /** Runs the guest's `flush` export, if it has one, so it can emit trailing output. */
  flush(offset: number): void {
    const flush = this.exports.flush
    if (!flush) return
    this.chunkOutput = 0
    this.chunkOutputLimit = this.limits.maxOutputPerChunk ?? defaultChunkOutputLimit(this.regionSize)
    this.callStatus('flush', flush, 0, 0, offset)
  }

  /**
   * The guest's state, without its help: a copy of all of linear memory, every mutable global
   * and the input region. Call only between calls (the executor takes it between chunks).
   */
  snapshot(): GuestState {
    const globals = this.guest.globals
    if (!globals) throw errors.checkpointUnsupported(this.guest.name, 'a precompiled WebAssembly.Module cannot be rewritten to expose its globals')
    const values = globals.map((g) => {
      if (g.valType === 'v128') throw errors.checkpointUnsupported(this.guest.name, 'it has a mutable v128 global')
      return (this.exports as unknown as Record<string, WebAssembly.Global>)[g.exportName]!.value as number | bigint
    })
    return {
      memory: new Uint8Array(this.memory.buffer.slice(0)),
      globals: values,
      region: { ptr: this.region, size: this.regionSize },
    }
  }

  /** Puts a snapshot's state into this fresh instance (in place of `init`). */
  restore(state: GuestState): void {
    const globals = this.guest.globals ?? []
    if (state.globals.length !== globals.length || state.memory.length % PAGE_SIZE !== 0) {
      throw errors.checkpointMismatch(this.guest.name, 'the guest state does not fit this module (globals or memory size differ)')
    }
    const missing = (state.memory.length - this.memory.buffer.byteLength) / PAGE_SIZE
    if (missing > 0) {
      try {
        this.memory.grow(missing)
      } catch (err) {
        throw errors.memoryLimit({ ...this.site, exportName: 'restore' }, this.guest.memoryLimit ?? state.memory.length, err)
      }
    }
    const view = this.currentView()
    view.set(state.memory)
    view.fill(0, state.memory.length)
    const exports = this.exports as unknown as Record<string, WebAssembly.Global>
    globals.forEach((g, i) => {
      exports[g.exportName]!.value = state.globals[i]!
    })
    const { ptr, size } = state.region
    if (ptr < 0 || size < 0 || ptr + size > view.length) {
      throw errors.checkpointMismatch(this.guest.name, 'the saved input region lies outside the saved memory')
    }
    this.region = ptr
    this.regionSize = size
  }

  /** Bytes of linear memory the instance has now. */
  memoryBytes(): number {
    return this.memory.buffer.byteLength
  }

  private createImportedMemory(): WebAssembly.Memory {
    const declared = this.guest.abi.importedMemory!
    const descriptor: WebAssembly.MemoryDescriptor = { initial: declared.initial }
    if (declared.maximum !== undefined) descriptor.maximum = declared.maximum
    if (declared.shared) (descriptor as { shared?: boolean }).shared = true
    try {
      return new WebAssembly.Memory(descriptor)
    } catch (err) {
      throw errors.memoryLimit(this.site, declared.initial * PAGE_SIZE, err)
    }
  }

  private allocRegion(length: number): void {
    const ptr = this.callExport('alloc', this.exports.alloc, length, 0, this.site.offset) >>> 0
    // malloc's NULL after its grow was refused: the region would overwrite the guest's data.
    if (ptr === 0 && this.refusal()) throw this.abort(this.refused(undefined, 'returned 0 from alloc'))
    const size = this.currentView().length
    if (ptr + length > size) {
      throw this.abort(errors.outOfBounds(this.site, 'alloc result', ptr, length, size))
    }
    this.region = ptr
    this.regionSize = length
  }

  private callStatus(name: string, fn: (a: number, b: number) => number, a: number, b: number, offset: number): void {
    const status = this.callExport(name, fn, a, b, offset)
    if (status !== 0) {
      const said = this.failMessage === undefined ? '' : ` (sandbox.fail: ${JSON.stringify(this.failMessage)})`
      throw this.abort(this.refusal() ? this.refused(undefined, `returned status ${status}${said}`, status) : errors.guestError({ ...this.site }, status, this.failMessage))
    }
    if (this.checkMemory && this.memory.buffer.byteLength > this.limits.memory!) {
      throw this.abort(errors.memoryLimit({ ...this.site }, this.limits.memory!))
    }
  }

  private callExport(name: string, fn: (a: number, b: number) => number, a: number, b: number, offset: number): number {
    if (this.broken) throw new Error('internal: a broken guest instance was called again')
    this.site.exportName = name
    this.site.offset = offset
    this.failMessage = undefined
    this.failure = undefined
    this.logCount = this.logBytes = 0
    // Per call: a refusal the guest handled in an earlier call explains nothing now.
    if (this.growRecord) this.growRecord.value = 0n
    try {
      return fn(a, b)
    } catch (err) {
      throw this.classify(err)
    } finally {
      if (this.logDropped !== 0) this.reportDropped()
    }
  }

  private reportDropped(): void {
    const dropped = this.logDropped
    this.logDropped = 0
    this.logSink?.dropped(dropped, this.site)
  }

  private currentView(): Uint8Array {
    if (this.memory === undefined) {
      // Called from the module's start function: the exported memory is out of reach until
      // instantiation ends, and that is the guest's mistake, not a host failure.
      const why = new Error(`the sandbox imports cannot be called from the module's start function (its memory is not reachable until instantiation ends): call them from init, process_chunk or flush`)
      throw this.abort(errors.trap({ ...this.site, exportName: 'start' }, why))
    }
    // memory.grow detaches the old buffer, which leaves the old view empty.
    if (this.view.byteLength === 0 || this.view.buffer !== this.memory.buffer) {
      this.view = new Uint8Array(this.memory.buffer)
    }
    return this.view
  }

  /** Turns whatever a guest call threw into the one typed error that explains it. */
  private classify(err: unknown): WasmSandboxError {
    this.broken = true
    if (this.failure) return this.failure
    if (err instanceof WasmSandboxError) return err
    if (this.refusal()) return this.refused(err, `trapped: ${err instanceof Error ? err.message : String(err)}`)
    if (this.growRecord === undefined || this.checkMemory) {
      // Not known for certain (no hook, or a cap the binary does not carry): a trap with memory
      // within a page of the cap is taken to follow a refused memory.grow.
      const limit = this.memoryCap()
      if (this.memory !== undefined && this.memory.buffer.byteLength + PAGE_SIZE > limit) {
        return errors.memoryLimit({ ...this.site }, limit, err)
      }
    }
    return errors.trap({ ...this.site }, err, wasmBacktrace(err, this.guest))
  }

  /** An out-of-bounds pointer right after a refused grow is the allocator's NULL: the limit. */
  private abort(err: WasmSandboxError): WasmSandboxError {
    this.broken = true
    if (err.code === 'ERR_WASM_OUT_OF_BOUNDS' && this.refusal()) err = this.refused(err, 'passed an out-of-bounds pointer')
    this.failure = err
    return err
  }

  private memoryCap(): number {
    return Math.min(this.guest.memoryLimit ?? Infinity, this.limits.memory ?? Infinity)
  }

  /** The grow refused in the current call, if any (only for a hooked guest). */
  private refusal(): ReturnType<typeof readRefusal> {
    return this.growRecord ? readRefusal(this.growRecord) : undefined
  }

  /** ERR_WASM_MEMORY_LIMIT for the refused grow, saying what the guest did next. */
  private refused(cause: unknown, then: string, status?: number): WasmSandboxError {
    return errors.memoryLimit({ ...this.site }, this.memoryCap(), cause, { ...this.refusal()!, then, status })
  }

  private readonly emit = (ptr: number, len: number): void => {
    const view = this.currentView()
    const start = ptr >>> 0
    // `len !== (len | 0)` also refuses NaN and fractions: a precompiled module can import emit
    // with float parameters, since V8 does not let us check an import's signature.
    if (len !== (len | 0) || len < 0 || start + len > view.length) {
      throw this.abort(errors.outOfBounds({ ...this.site }, 'emit range', start, len, view.length))
    }
    if (len === 0) return
    this.chunkOutput += len
    this.totalOutput += len
    if (this.chunkOutput > this.chunkOutputLimit) {
      throw this.abort(errors.outputLimit({ ...this.site }, this.chunkOutputLimit, 'maxOutputPerChunk'))
    }
    if (this.totalOutput > this.limits.maxOutput) {
      throw this.abort(errors.outputLimit({ ...this.site }, this.limits.maxOutput, 'maxOutput'))
    }
    this.sink(view, start, len)
  }

  private readonly fail = (ptr: number, len: number): void => {
    const view = this.currentView()
    const start = ptr >>> 0
    if (len !== (len | 0) || len < 0 || start + len > view.length) {
      throw this.abort(errors.outOfBounds({ ...this.site }, 'fail message', start, len, view.length))
    }
    this.failMessage = utf8.decode(view.subarray(start, start + Math.min(len, MAX_FAIL_MESSAGE)))
  }

  /** ABI v1.1 `sandbox.config_size() -> len`. */
  private readonly configSize = (): number => this.config.length

  /** ABI v1.1 `sandbox.config_read(ptr, len) -> copied`: the first min(len, size) config bytes to `ptr`. */
  private readonly configRead = (ptr: number, len: number): number => {
    const view = this.currentView()
    const start = ptr >>> 0
    if (len !== (len | 0) || len < 0 || start + len > view.length) {
      throw this.abort(errors.outOfBounds({ ...this.site }, 'config_read range', start, len, view.length))
    }
    const n = Math.min(len, this.config.length)
    view.set(n === this.config.length ? this.config : this.config.subarray(0, n), start)
    return n
  }

  /**
   * ABI v1.1 `sandbox.log(level, ptr, len)`. The range is checked like `emit`'s; then the
   * message goes to the sink within LOG_LIMITS, or is counted as dropped. It never throws for
   * anything but a bad range: logging cannot fail a guest that logs too much.
   */
  private readonly log = (level: number, ptr: number, len: number): void => {
    const view = this.currentView()
    const start = ptr >>> 0
    if (len !== (len | 0) || len < 0 || start + len > view.length) {
      throw this.abort(errors.outOfBounds({ ...this.site }, 'log message', start, len, view.length))
    }
    let length = len
    if (length > LOG_LIMITS.messageBytes) {
      length = LOG_LIMITS.messageBytes
      // Cut before a UTF-8 continuation byte, so the message does not end in half a character.
      for (let k = 0; k < 3 && (view[start + length]! & 0xc0) === 0x80; k++) length--
    }
    if (this.logCount >= LOG_LIMITS.messagesPerCall || this.logBytes + length > LOG_LIMITS.bytesPerCall) {
      this.logDropped++
      return
    }
    this.logCount++
    this.logBytes += length
    level |= 0
    this.logSink?.message(level < 0 ? 0 : level > 3 ? 3 : level, view, start, length, length < len ? len : 0, this.site)
  }
}
