import { init, WASI } from '@wasmer/wasi'
import { errors, type GuestSite, type WasmSandboxError } from '../errors.js'
import type { LoadedGuest } from '../guest/load.js'
import type { OutputSink } from '../guest/instance.js'
import { PAGE_SIZE } from '../guest/binary.js'
import { FileSystemImage } from './filesystem.js'
import { wasiImports, WasiExit, type StandardStreams } from './imports.js'
import type { WasiConfig } from './options.js'

let ready: Promise<void> | undefined

/** @wasmer/wasi compiles its own wasm once per thread before any WASI object is made. */
export function initWasi(): Promise<void> {
  ready ??= init()
  return ready
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
 * A program's fd 1 and fd 2 writes: stdout to `output`, stderr to `stderr` with its tail kept
 * for the error message of a failed run.
 */
export function standardWrites(output: OutputSink, stderr: OutputSink, tail: StderrTail): StandardStreams['write'] {
  return (fd, memory, ptr, length) => {
    if (fd === 1) output(memory, ptr, length)
    else {
      tail.add(memory, ptr, length)
      stderr(memory, ptr, length)
    }
  }
}

/**
 * One instance of a WASI command: prepared (instantiated, with its imports and file system)
 * ahead of its run, so a per-record runner can get the next one ready while it waits for input.
 */
export class WasiProgram {
  private readonly instance: WebAssembly.Instance
  private readonly memory: WebAssembly.Memory
  private readonly wasi: WASI
  private readonly memoryLimit: number | undefined

  constructor(guest: LoadedGuest, config: WasiConfig, streams: StandardStreams, image: FileSystemImage, memoryLimit: number | undefined) {
    this.memoryLimit = guest.memoryLimit ?? memoryLimit
    const args = config.args ?? [programName(guest.name)]
    const preopens: Record<string, string> = {}
    for (const grant of config.preopens) preopens[grant.guestPath] = grant.guestPath
    const fs = image.mount()
    this.wasi = new WASI({ args, env: config.env, preopens, fs: fs.fs })
    let memory: WebAssembly.Memory | undefined
    const imports = wasiImports(this.wasi, guest.module, config, streams, () => memory!, fs)
    this.instance = new WebAssembly.Instance(guest.module, imports)
    memory = this.instance.exports.memory as WebAssembly.Memory
    this.memory = memory
    this.wasi.instantiate(this.instance, {})
  }

  /**
   * Runs `_start` to its end. Returns the exit code (0 when `_start` returns); throws the typed
   * error for a trap or a memory limit. `site` says where in the input the program was.
   */
  run(site: GuestSite): number {
    const start = this.instance.exports._start as () => void
    try {
      start()
      return 0
    } catch (err) {
      if (err instanceof WasiExit) return err.code
      throw this.classify(err, site)
    } finally {
      this.wasi.free()
    }
  }

  private classify(err: unknown, site: GuestSite): WasmSandboxError | unknown {
    if ((err as { name?: string })?.name === 'WasmSandboxError') return err
    const limit = this.memoryLimit
    if (limit !== undefined && this.memory.buffer.byteLength + PAGE_SIZE > limit) return errors.memoryLimit({ ...site }, limit, err)
    if (err instanceof WebAssembly.RuntimeError || err instanceof RangeError) return errors.trap({ ...site }, err)
    return err
  }
}

/** argv[0]: the file name, as a shell would give it. */
function programName(name: string): string {
  return name.split(/[\\/]/).pop() || 'program'
}

export { FileSystemImage }
