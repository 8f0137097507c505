/**
 * One error family for everything the sandbox reports. `code` is stable and is what callers
 * should branch on; the message is for people and says what to do next.
 */
export type WasmSandboxErrorCode =
  | 'ERR_WASM_INVALID_OPTION'
  | 'ERR_WASM_MODULE_NOT_FOUND'
  | 'ERR_WASM_MODULE_TOO_LARGE'
  | 'ERR_WASM_INVALID_MODULE'
  | 'ERR_WASM_MISSING_EXPORT'
  | 'ERR_WASM_BAD_EXPORT'
  | 'ERR_WASM_UNKNOWN_IMPORT'
  | 'ERR_WASM_TRAP'
  | 'ERR_WASM_GUEST_ERROR'
  | 'ERR_WASM_OUT_OF_BOUNDS'
  | 'ERR_WASM_RECORD_TOO_LARGE'
  | 'ERR_WASM_MEMORY_LIMIT'
  | 'ERR_WASM_TIMEOUT'
  | 'ERR_WASM_OUTPUT_LIMIT'
  | 'ERR_WASM_WORKER_DIED'
  | 'ERR_WASM_CHECKPOINT_UNSUPPORTED'
  | 'ERR_WASM_CHECKPOINT_MISMATCH'
  | 'ERR_WASM_CHECKPOINT_FAILED'
  | 'ERR_WASM_NO_INSTANCE'
  | 'ERR_WASM_EXIT'

/** One frame of a trapped guest's call stack, innermost first (`err.backtrace`). */
export interface WasmFrame {
  /** Index in the module's function index space (imported functions first). */
  func: number
  /** From the module's `name` section, else the name it exports the function under. */
  name: string | undefined
  /** Byte offset of the instruction in the guest's own file, as `wasm-objdump -d` numbers it. */
  offset: number
}

export interface WasmSandboxErrorDetails {
  /** Input byte offset of the chunk being processed when it happened (absent at load time). */
  offset?: number
  /** Module name: the file path, URL, or `<buffer>` / `<module>`. */
  module?: string
  /** The guest export that was running (`process_chunk`, `init`, `flush`, `alloc`). */
  exportName?: string
  /** Non-zero status returned by the guest. */
  status?: number
  /** A WASI program's exit code (`ERR_WASM_EXIT`). */
  exitCode?: number
  /** The guest's call stack when it trapped (`ERR_WASM_TRAP`), innermost first. */
  backtrace?: readonly WasmFrame[]
  cause?: unknown
}

export class WasmSandboxError extends Error {
  readonly code: WasmSandboxErrorCode
  readonly offset: number | undefined
  readonly module: string | undefined
  readonly exportName: string | undefined
  readonly status: number | undefined
  readonly exitCode: number | undefined
  /** `ERR_WASM_TRAP`: the guest's wasm frames when it trapped, innermost first (as many as V8 recorded). */
  readonly backtrace: readonly WasmFrame[] | undefined

  constructor(code: WasmSandboxErrorCode, message: string, details: WasmSandboxErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause })
    this.name = 'WasmSandboxError'
    this.code = code
    this.offset = details.offset
    this.module = details.module
    this.exportName = details.exportName
    this.status = details.status
    this.exitCode = details.exitCode
    this.backtrace = details.backtrace
  }
}

export function isWasmSandboxError(err: unknown): err is WasmSandboxError {
  return err instanceof WasmSandboxError
}

/** A `memory.grow` the engine refused, and what the guest did after it, for the message. */
export interface RefusedGrow {
  /** Bytes of linear memory when it was refused. */
  atBytes: number
  /** Bytes the guest asked for on top. */
  askedBytes: number
  /** What the guest did next, after "then the guest": `trapped: unreachable`, `returned status 1`. */
  then?: string | undefined
  /** The non-zero status it returned, if that is what it did. */
  status?: number | undefined
  /** The code a WASI program exited with, if that is what it did. */
  exitCode?: number | undefined
}

/** Where a runtime error happened, as the executor knows it. */
export interface GuestSite {
  module: string
  exportName: string
  offset: number
}

function at(site: GuestSite): string {
  return `${site.module}: ${site.exportName}() at input offset ${site.offset}`
}

/** A backtrace as wasmtime prints one: `    0: 0x1a3 - parse_field`, innermost first. */
export function formatBacktrace(frames: readonly WasmFrame[]): string {
  let out = 'wasm backtrace:'
  frames.forEach((f, i) => {
    out += `\n  ${String(i).padStart(3)}: 0x${f.offset.toString(16)} - ${f.name ?? `wasm-function[${f.func}]`}`
  })
  return out
}

/**
 * A storage as the user would recognise it: its class, and its directory if it has one
 * (`FileCheckpointStorage(.checkpoints)`); `checkpoint.storage` for a plain object.
 */
export function storageName(storage: unknown): string {
  const name = typeof storage === 'object' && storage !== null ? storage.constructor?.name : undefined
  if (!name || name === 'Object') return 'checkpoint.storage'
  const dir = (storage as { dir?: unknown }).dir
  return typeof dir === 'string' ? `${name}(${dir})` : name
}

/** Factories, one per code, so messages stay consistent and every error carries its site. */
export const errors = {
  invalidOption(message: string): WasmSandboxError {
    return new WasmSandboxError('ERR_WASM_INVALID_OPTION', message)
  },
  moduleNotFound(module: string, cause: unknown): WasmSandboxError {
    return new WasmSandboxError(
      'ERR_WASM_MODULE_NOT_FOUND',
      `Cannot read wasm module ${module}: ${(cause as Error)?.message ?? cause}. Check the path or URL.`,
      { module, cause },
    )
  },
  moduleTooLarge(module: string, size: number, limit: number): WasmSandboxError {
    return new WasmSandboxError(
      'ERR_WASM_MODULE_TOO_LARGE',
      `Wasm module ${module} is ${size} bytes, more than limits.moduleSize (${limit}); nothing was done with it. Raise limits.moduleSize if the module is trusted to be that large.`,
      { module },
    )
  },
  loadTimeout(module: string, timeoutMs: number): WasmSandboxError {
    return new WasmSandboxError(
      'ERR_WASM_TIMEOUT',
      `Loading wasm module ${module} took longer than limits.loadTimeout (${timeoutMs} ms); the thread loading it was stopped. Raise limits.loadTimeout if the module is trusted and this machine is slow or busy.`,
      { module },
    )
  },
  loaderOutOfMemory(module: string, heapMb: number): WasmSandboxError {
    return new WasmSandboxError(
      'ERR_WASM_MODULE_TOO_LARGE',
      `Loading wasm module ${module} needed more than the loader thread's ${heapMb} MiB of heap: it declares far more types, imports, exports or globals than real modules do. It was stopped; nothing was compiled.`,
      { module },
    )
  },
  loaderDied(module: string, cause: unknown): WasmSandboxError {
    const reason = cause instanceof Error ? cause.message : String(cause)
    return new WasmSandboxError('ERR_WASM_WORKER_DIED', `The thread loading wasm module ${module} died: ${reason}`, { module, cause })
  },
  invalidModule(module: string, reason: string, cause?: unknown): WasmSandboxError {
    return new WasmSandboxError(
      'ERR_WASM_INVALID_MODULE',
      `${module} is not a valid WebAssembly module: ${reason}`,
      { module, cause },
    )
  },
  missingExports(module: string, names: string[]): WasmSandboxError {
    return new WasmSandboxError(
      'ERR_WASM_MISSING_EXPORT',
      `${module} does not export ${names.join(', ')}, required by the wasm-sandbox guest ABI v1 (see docs/abi.md).`,
      { module },
    )
  },
  badExport(module: string, name: string, expected: string, actual: string): WasmSandboxError {
    return new WasmSandboxError(
      'ERR_WASM_BAD_EXPORT',
      `${module} exports ${name} as ${actual}, but the guest ABI v1 needs ${expected} (see docs/abi.md).`,
      { module, exportName: name },
    )
  },
  unknownImport(module: string, imports: string[]): WasmSandboxError {
    return new WasmSandboxError(
      'ERR_WASM_UNKNOWN_IMPORT',
      `${module} imports ${imports.join(', ')}, which the sandbox does not provide. ` +
        'A guest may import only sandbox.emit, sandbox.fail, env.memory and, from ABI v1.1, sandbox.config_size, ' +
        'sandbox.config_read and sandbox.log (see docs/abi.md).',
      { module },
    )
  },
  trap(site: GuestSite, cause: unknown, backtrace?: readonly WasmFrame[]): WasmSandboxError {
    const reason = cause instanceof Error ? cause.message : String(cause)
    const trace = backtrace && backtrace.length > 0 ? `\n${formatBacktrace(backtrace)}` : ''
    return new WasmSandboxError('ERR_WASM_TRAP', `Guest trapped in ${at(site)}: ${reason}${trace}`, {
      ...site,
      cause,
      ...(backtrace && backtrace.length > 0 ? { backtrace } : {}),
    })
  },
  guestError(site: GuestSite, status: number, failMessage: string | undefined): WasmSandboxError {
    const why = failMessage ? `: ${failMessage}` : ' (the guest gave no message via sandbox.fail)'
    return new WasmSandboxError('ERR_WASM_GUEST_ERROR', `Guest returned error status ${status} from ${at(site)}${why}`, {
      ...site,
      status,
    })
  },
  outOfBounds(site: GuestSite, what: string, ptr: number, len: number, memoryBytes: number): WasmSandboxError {
    return new WasmSandboxError(
      'ERR_WASM_OUT_OF_BOUNDS',
      `Guest passed an out-of-bounds ${what} (ptr=${ptr}, len=${len}, memory is ${memoryBytes} bytes) in ${at(site)}. ` +
        'The guest is broken or hostile; its instance was discarded.',
      site,
    )
  },
  recordTooLarge(offset: number, maxRecordSize: number): WasmSandboxError {
    return new WasmSandboxError(
      'ERR_WASM_RECORD_TOO_LARGE',
      `A record starting at input offset ${offset} is longer than maxRecordSize (${maxRecordSize} bytes). ` +
        'Raise maxRecordSize or check the delimiter.',
      { offset },
    )
  },
  /**
   * `refused`: the `memory.grow` the engine refused (known for certain, lib/guest/grow-hook.ts)
   * and what the guest did next; without it, the limit is inferred from the memory size.
   */
  memoryLimit(site: GuestSite, limitBytes: number, cause?: unknown, refused?: RefusedGrow): WasmSandboxError {
    const details = { ...site, cause, status: refused?.status, exitCode: refused?.exitCode }
    if (!refused) {
      return new WasmSandboxError(
        'ERR_WASM_MEMORY_LIMIT',
        `Guest hit the memory limit of ${limitBytes} bytes in ${at(site)}. Raise limits.memory if the guest legitimately needs more.`,
        details,
      )
    }
    const { atBytes, askedBytes } = refused
    const asked = `memory.grow asked for ${askedBytes} bytes more at ${atBytes} bytes (${atBytes + askedBytes} in all)`
    const then = refused.then ? `; then the guest ${refused.then}` : ''
    if (atBytes + askedBytes <= limitBytes) {
      // Under the cap: the module's own declared maximum refused it, or the host had no memory.
      return new WasmSandboxError(
        'ERR_WASM_MEMORY_LIMIT',
        `Guest ran out of memory in ${at(site)}: ${asked}, within limits.memory (${limitBytes} bytes), and was refused ` +
          `by the module's own declared maximum or because the host could not allocate it${then}. ` +
          'Rebuild the guest with a larger maximum memory, or give the process more memory.',
        details,
      )
    }
    return new WasmSandboxError(
      'ERR_WASM_MEMORY_LIMIT',
      `Guest hit the memory limit of ${limitBytes} bytes in ${at(site)}: ${asked} and was refused${then}. ` +
        'Raise limits.memory if the guest legitimately needs more.',
      details,
    )
  },
  initialMemoryTooLarge(module: string, initialBytes: number, limitBytes: number): WasmSandboxError {
    return new WasmSandboxError(
      'ERR_WASM_MEMORY_LIMIT',
      `${module} declares an initial memory of ${initialBytes} bytes, over limits.memory (${limitBytes} bytes). ` +
        'Raise limits.memory or rebuild the guest with a smaller initial memory.',
      { module },
    )
  },
  timeout(site: GuestSite, timeoutMs: number, kind: 'timeout' | 'deadline' = 'timeout'): WasmSandboxError {
    const what = kind === 'deadline' ? `the stream deadline of ${timeoutMs} ms` : `the ${timeoutMs} ms time limit`
    return new WasmSandboxError(
      'ERR_WASM_TIMEOUT',
      `Guest exceeded ${what} in ${at(site)} and was terminated. Raise limits.${kind} if the work is legitimately slow.`,
      site,
    )
  },
  outputLimit(site: GuestSite, limit: number, which: 'maxOutputPerChunk' | 'maxOutput'): WasmSandboxError {
    return new WasmSandboxError(
      'ERR_WASM_OUTPUT_LIMIT',
      `Guest emitted more than limits.${which} (${limit} bytes) in ${at(site)}. Raise limits.${which} if that much output is expected.`,
      site,
    )
  },
  checkpointUnsupported(module: string, why: string): WasmSandboxError {
    return new WasmSandboxError(
      'ERR_WASM_CHECKPOINT_UNSUPPORTED',
      `Cannot checkpoint ${module}: ${why}. Pass the module as bytes or a path, or turn checkpoints off.`,
      { module },
    )
  },
  checkpointMismatch(module: string, why: string): WasmSandboxError {
    return new WasmSandboxError(
      'ERR_WASM_CHECKPOINT_MISMATCH',
      `Cannot resume ${module} from this checkpoint: ${why}. Resume with the same module and options, or start afresh.`,
      { module },
    )
  },
  checkpointFailed(offset: number, cause: unknown): WasmSandboxError {
    const reason = cause instanceof Error ? cause.message : String(cause)
    return new WasmSandboxError(
      'ERR_WASM_CHECKPOINT_FAILED',
      `Saving the checkpoint at input offset ${offset} failed: ${reason}. Check the checkpoint storage.`,
      { offset, cause },
    )
  },
  checkpointSaveTimeout(storage: unknown, offset: number, timeoutMs: number): WasmSandboxError {
    return new WasmSandboxError(
      'ERR_WASM_CHECKPOINT_FAILED',
      `Saving the checkpoint at input offset ${offset} to ${storageName(storage)} took longer than checkpoint.saveTimeout ` +
        `(${timeoutMs} ms); the stream was stopped. Check the storage, or raise checkpoint.saveTimeout if it is legitimately that slow.`,
      { offset },
    )
  },
  /**
   * A storage's `loadLatest`, `list` or `prune` threw or rejected (a failed `save` is
   * `checkpointFailed`, which knows the cut). `next`: what the user can do, which depends on
   * where in the run it happened.
   */
  checkpointStorageFailed(storage: unknown, operation: 'loadLatest' | 'list' | 'prune', cause: unknown, next: string): WasmSandboxError {
    const reason = cause instanceof Error ? cause.message : String(cause)
    return new WasmSandboxError('ERR_WASM_CHECKPOINT_FAILED', `${storageName(storage)}.${operation}() failed: ${reason}. ${next}`, { cause })
  },
  workerDied(site: GuestSite, cause: unknown): WasmSandboxError {
    const reason = cause instanceof Error ? cause.message : String(cause)
    return new WasmSandboxError(
      'ERR_WASM_WORKER_DIED',
      `The worker running the guest died in ${at(site)}: ${reason}`,
      { ...site, cause },
    )
  },
  exit(site: GuestSite, exitCode: number, stderrTail: string): WasmSandboxError {
    const said = stderrTail.trim() ? ` Its stderr ended with:\n${stderrTail.trimEnd()}` : ' It wrote nothing to stderr.'
    return new WasmSandboxError(
      'ERR_WASM_EXIT',
      `The WASI program ${site.module} exited with code ${exitCode} at input offset ${site.offset}.${said}`,
      { ...site, exitCode },
    )
  },
  noInstance(site: GuestSite): WasmSandboxError {
    return new WasmSandboxError(
      'ERR_WASM_NO_INSTANCE',
      `No live guest instance for ${at(site)}: it failed earlier or the stream was destroyed. This is a bug in the caller of the runner.`,
      site,
    )
  },
}
