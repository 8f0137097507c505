import type { WASI } from '@wasmer/wasi'
import { loadWasmer, wasmer } from './wasmer.js'
import { errors, type GuestSite, type WasmSandboxError } from '../errors.js'
import type { LoadedGuest } from '../guest/load.js'
import type { OutputSink } from '../guest/instance.js'
import { PAGE_SIZE, type MemoryLimits } from '../guest/binary.js'
import { readRefusal } from '../guest/grow-hook.js'
import { FileSystemImage } from './filesystem.js'
import { memoryViews, Replay, wasiImports, wasmerPreview1, WasiExit, type StandardStreams } from './imports.js'
import { ownPreview1, type MemoryViews } from './own-preview1.js'
import { HOST_MEMORY } from './preview1.js'
import type { WasiConfig } from './options.js'
import type { OutputBudget } from './output-budget.js'

/**
 * @wasmer/wasi compiles its own wasm once per thread before any WASI object is made; only a
 * configuration that needs it (`needsWasmer`) waits for that.
 */
export function initWasi(config?: WasiConfig): Promise<void> {
  if (config && !needsWasmer(config)) return Promise.resolve()
  return loadWasmer()
}

/** The last bytes a program wrote to stderr, kept for the message of its error. */
export class StderrTail {
  private readonly limit: number
  private bytes = Buffer.alloc(0)

  constructor(limit = 2048) {
    this.limit = limit
  }

  add(memory: Uint8Array, start: number, length: number): void {
    const keep = Math.min(length, this.limit)
    const next = Buffer.concat([this.bytes, memory.subarray(start + length - keep, start + length)])
    this.bytes = next.length > this.limit ? next.subarray(next.length - this.limit) : next
  }

  /** Forgets what was kept (a new run). */
  reset(): void {
    this.bytes = Buffer.alloc(0)
  }

  /** The last few lines, as text. */
  text(): string {
    const lines = this.bytes.toString('utf8').split('\n')
    return lines.slice(-8).join('\n')
  }
}

/**
 * A program's fd 1 and fd 2 writes: stdout to `output` within `budget`, stderr to `stderr` with
 * its tail kept for the error message of a failed run.
 */
export function standardWrites(output: OutputSink, stderr: OutputSink, tail: StderrTail, budget: OutputBudget): StandardStreams['write'] {
  return (fd, memory, ptr, length) => {
    if (fd === 1) {
      budget.spend(length)
      output(memory, ptr, length)
    } else {
      tail.add(memory, ptr, length)
      stderr(memory, ptr, length)
    }
  }
}

/**
 * Memories up to this size are zeroed and reused from run to run; larger ones are made anew. Here
 * zeroing 2 pages took 2 µs against 20 µs for a new memory (before collecting it), 64 pages 100
 * against 230 µs, 256 pages 780 against 310 µs: a new memory costs only the pages touched.
 */
const REUSED_MEMORY_PAGES = 64

/**
 * Makes instances of one WASI command for a worker. With no directory granted the imports are
 * the host's own and built once, so an instance costs only `new WebAssembly.Instance`; with
 * grants each instance gets its own @wasmer/wasi object over a fresh copy of the granted files.
 */
export class WasiRuntime {
  /** The memory of the instance that runs now: the shared imports read and write it. */
  memory: WebAssembly.Memory | undefined
  readonly memoryLimit: number | undefined
  readonly guest: LoadedGuest
  private readonly config: WasiConfig
  private readonly streams: StandardStreams
  private readonly args: string[]
  private readonly views: MemoryViews
  private readonly shared: WebAssembly.Imports | undefined
  /** The shared imports' fixed clock and seeded random, started afresh for each run. */
  private readonly replay: Replay
  private readonly image: FileSystemImage | undefined
  /** The memory of the last run, once it has ended: the next instance's, zeroed, if it never grew. */
  private spare: WebAssembly.Memory | undefined
  /** The import the rewritten command takes its memory from, reused rather than made per run. */
  private readonly hostImports: Record<string, WebAssembly.Memory> = {}

  constructor(guest: LoadedGuest, config: WasiConfig, streams: StandardStreams, memoryLimit: number | undefined) {
    this.guest = guest
    this.config = config
    this.streams = streams
    this.memoryLimit = guest.memoryLimit ?? memoryLimit
    this.args = config.args ?? [programName(guest.name)]
    this.views = memoryViews(() => this.memory!)
    this.replay = new Replay(config)
    if (needsWasmer(config)) this.image = new FileSystemImage(config)
    else this.shared = wasiImports(ownPreview1(config, this.args, this.views), config, streams, this.views, { free: 0 }, this.replay)
  }

  /** A fresh instance, ready to run. */
  prepare(): WasiProgram {
    if (this.shared) {
      this.replay.restart()
      return new WasiProgram(this, this.instantiate(this.shared), undefined)
    }
    const fs = this.image!.mount()
    const preopens: Record<string, string> = {}
    for (const grant of this.config.preopens) preopens[grant.guestPath] = grant.guestPath
    const wasi = new (wasmer().WASI)({ args: this.args, env: this.config.env, preopens, fs: fs.fs })
    let memory: WebAssembly.Memory | undefined
    const views = memoryViews(() => memory!)
    const imports = wasiImports(wasmerPreview1(wasi, this.guest.module), this.config, this.streams, views, fs)
    const instance = this.instantiate(imports)
    memory = instance.exports.memory as WebAssembly.Memory
    wasi.instantiate(instance, {})
    return new WasiProgram(this, instance, wasi)
  }

  /**
   * A module the reader accepted can still fail to link (an import WASI does not provide) or
   * trap in its start function: typed errors, not a dead worker with V8's stack as its message.
   */
  private instantiate(imports: WebAssembly.Imports): WebAssembly.Instance {
    if (this.guest.hostMemory) {
      this.hostImports[HOST_MEMORY.field] = this.memoryForNextRun(this.guest.hostMemory)
      imports[HOST_MEMORY.module] = this.hostImports
    }
    try {
      return new WebAssembly.Instance(this.guest.module, imports)
    } catch (err) {
      // A missing import module is a TypeError, a missing or mismatched field a LinkError.
      if (err instanceof WebAssembly.LinkError || err instanceof TypeError) throw errors.invalidModule(this.guest.name, `cannot instantiate: ${err.message}`, err)
      if (err instanceof WebAssembly.RuntimeError) throw errors.trap({ module: this.guest.name, exportName: 'start', offset: 0 }, err)
      throw err
    }
  }

  /** A run has ended: its memory may serve the next instance. */
  recycle(memory: WebAssembly.Memory): void {
    const limits = this.guest.hostMemory
    if (limits && limits.initial <= REUSED_MEMORY_PAGES) this.spare = memory
  }

  /**
   * What a fresh instance would get: a memory of the declared initial size, all zeros (the
   * instantiation then writes the data segments). The last run's memory is that once zeroed,
   * unless it grew, which cannot be undone.
   */
  private memoryForNextRun(limits: MemoryLimits): WebAssembly.Memory {
    const spare = this.spare
    this.spare = undefined
    if (spare && spare.buffer.byteLength === limits.initial * PAGE_SIZE) {
      new Uint8Array(spare.buffer).fill(0)
      return spare
    }
    return new WebAssembly.Memory(limits.maximum === undefined ? { initial: limits.initial } : { initial: limits.initial, maximum: limits.maximum })
  }
}

/** @wasmer/wasi is needed only for a file system: loaded and initialised only then. */
export function needsWasmer(config: WasiConfig): boolean {
  return config.preopens.length > 0
}

/** One instance of a WASI command, run once. */
export class WasiProgram {
  private readonly runtime: WasiRuntime
  private readonly instance: WebAssembly.Instance
  private readonly memory: WebAssembly.Memory
  private readonly wasi: WASI | undefined
  /** The grow hook's record (lib/guest/grow-hook.ts); a fresh instance runs once, so never reset. */
  private readonly growRecord: WebAssembly.Global | undefined

  constructor(runtime: WasiRuntime, instance: WebAssembly.Instance, wasi: WASI | undefined) {
    this.runtime = runtime
    this.instance = instance
    this.memory = instance.exports.memory as WebAssembly.Memory
    this.wasi = wasi
    const hook = runtime.guest.growHook
    this.growRecord = hook ? (instance.exports[hook.record] as WebAssembly.Global) : undefined
  }

  /**
   * Runs `_start` to its end. Returns the exit code (0 when `_start` returns); throws the typed
   * error for a trap or a memory limit, and for a non-zero exit after a refused memory.grow
   * (malloc failed, then `exit(1)` or `abort()`). `site` says where in the input the program was.
   */
  run(site: GuestSite): number {
    this.runtime.memory = this.memory
    const start = this.instance.exports._start as () => void
    let code: number
    try {
      start()
      return 0
    } catch (err) {
      if (!(err instanceof WasiExit)) throw this.classify(err, site)
      code = err.code
    } finally {
      this.wasi?.free()
      this.runtime.recycle(this.memory)
    }
    const refusal = code !== 0 && this.growRecord ? readRefusal(this.growRecord) : undefined
    if (refusal) throw errors.memoryLimit({ ...site }, this.runtime.memoryLimit!, undefined, { ...refusal, then: `exited with code ${code}`, exitCode: code })
    return code
  }

  private classify(err: unknown, site: GuestSite): WasmSandboxError | unknown {
    if ((err as { name?: string })?.name === 'WasmSandboxError') return err
    const limit = this.runtime.memoryLimit
    const refusal = this.growRecord ? readRefusal(this.growRecord) : undefined
    if (refusal) return errors.memoryLimit({ ...site }, limit!, err, { ...refusal, then: `trapped: ${(err as Error)?.message ?? String(err)}` })
    // Without the hook, only a guess: a trap with memory within a page of the cap.
    if (!this.growRecord && limit !== undefined && this.memory.buffer.byteLength + PAGE_SIZE > limit) return errors.memoryLimit({ ...site }, limit, err)
    if (err instanceof WebAssembly.RuntimeError || err instanceof RangeError) return errors.trap({ ...site }, err)
    return err
  }
}

/** argv[0]: the file name, as a shell would give it. */
function programName(name: string): string {
  return name.split(/[\\/]/).pop() || 'program'
}

