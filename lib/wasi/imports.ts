import type { WASI } from '@wasmer/wasi'
import type { WasiConfig } from './options.js'
import type { MemoryViews } from './own-preview1.js'
import {
  CLOCK_REALTIME,
  ERRNO_BADF,
  ERRNO_INVAL,
  ERRNO_NOSPC,
  ERRNO_NOSYS,
  ERRNO_ROFS,
  ERRNO_SPIPE,
  ERRNO_SUCCESS,
  FDFLAGS_APPEND,
  MUTATING_PATH_FUNCTIONS,
  OFLAGS_CREAT,
  OFLAGS_TRUNC,
  RIGHTS_FD_ALLOCATE,
  RIGHTS_FD_FILESTAT_SET_SIZE,
  RIGHTS_FD_WRITE,
  SOCKET_FUNCTIONS,
  WASI_MODULE,
} from './preview1.js'

/** The program's standard streams, as the runner provides them. */
export interface StandardStreams {
  /**
   * Copies up to `length` input bytes into `memory` at `ptr`; returns how many, 0 at the end of
   * input. With `wait`, blocks until at least one byte or the end; without, returns what is there.
   */
  read(memory: Uint8Array, ptr: number, length: number, wait: boolean): number
  /** Standard output (fd 1) or error (fd 2). May block while the consumer is slow. */
  write(fd: 1 | 2, memory: Uint8Array, ptr: number, length: number): void
}

/** Thrown by `proc_exit` to unwind the program; the runner turns it into the end or an error. */
export class WasiExit {
  constructor(readonly code: number) {}
}

export type Fn = (...args: never[]) => unknown

/** @wasmer/wasi's preview 1 for `module`: what serves a program that was granted directories. */
export function wasmerPreview1(wasi: WASI, module: WebAssembly.Module): Record<string, Fn> {
  return (wasi.getImports(module) as Record<string, Record<string, Fn>>)[WASI_MODULE]!
}

/** Views of a memory that may be replaced (a new run) or grow (a detached buffer). */
export function memoryViews(memory: () => WebAssembly.Memory): MemoryViews {
  let bytes: Uint8Array = new Uint8Array(0)
  let view: DataView = new DataView(new ArrayBuffer(0))
  const renew = (): void => {
    const buffer = memory().buffer
    if (bytes.buffer !== buffer || bytes.byteLength !== buffer.byteLength) {
      bytes = new Uint8Array(buffer)
      view = new DataView(buffer)
    }
  }
  return {
    bytes: () => (renew(), bytes),
    view: () => (renew(), view),
  }
}

/**
 * Where the fixed clock and the seeded random are: each run of a program starts them afresh
 * (`restart`), so a run repeats exactly, and records run one by one on shared imports see
 * nothing of the runs before (the clock and the random went on from record to record).
 */
export class Replay {
  tick = 0n
  random: number
  private readonly seed: number

  constructor(config: WasiConfig) {
    this.seed = (Math.floor(config.seed) >>> 0) || 1
    this.random = this.seed
  }

  restart(): void {
    this.tick = 0n
    this.random = this.seed
  }
}

/**
 * The program's `wasi_snapshot_preview1` imports over `base` (@wasmer/wasi's when directories are
 * granted, for the in-memory file system; the host's own otherwise); the host takes over what must stream or be bounded: fds 0-2
 * (standard streams through the runner, never buffered whole), `proc_exit`, a fixed clock and a
 * seeded random for deterministic runs, and refusals (sockets; writes where no grant is
 * writable).
 */
export function wasiImports(
  base: Record<string, Fn>,
  config: WasiConfig,
  streams: StandardStreams,
  views: MemoryViews,
  budget: { free: number },
  replay: Replay = new Replay(config),
): WebAssembly.Imports {
  const own: Record<string, Fn> = { ...base }
  let bytes: Uint8Array = new Uint8Array(0)
  let view: DataView = new DataView(new ArrayBuffer(0))
  const mem = (): Uint8Array => {
    bytes = views.bytes()
    view = views.view()
    return bytes
  }

  own.fd_read = ((fd: number, iovs: number, count: number, nread: number): number => {
    if (fd !== 0) return (base.fd_read as (...a: number[]) => number)(fd, iovs, count, nread)
    const memory = mem()
    let total = 0
    for (let i = 0; i < count; i++) {
      const ptr = view.getUint32(iovs + 8 * i, true)
      const len = view.getUint32(iovs + 8 * i + 4, true)
      if (ptr + len > memory.length) return ERRNO_INVAL
      const n = streams.read(memory, ptr, len, total === 0)
      total += n
      if (n < len) break
    }
    view.setUint32(nread, total, true)
    return ERRNO_SUCCESS
  }) as Fn

  own.fd_write = ((fd: number, iovs: number, count: number, nwritten: number): number => {
    if (fd !== 1 && fd !== 2) return (base.fd_write as (...a: number[]) => number)(fd, iovs, count, nwritten)
    let memory = mem()
    let total = 0
    for (let i = 0; i < count; i++) {
      const ptr = view.getUint32(iovs + 8 * i, true)
      const len = view.getUint32(iovs + 8 * i + 4, true)
      if (ptr + len > memory.length) return ERRNO_INVAL
      streams.write(fd, memory, ptr, len)
      memory = mem()
      total += len
    }
    view.setUint32(nwritten, total, true)
    return ERRNO_SUCCESS
  }) as Fn

  own.proc_exit = ((code: number): never => {
    throw new WasiExit(code >>> 0)
  }) as Fn
  own.proc_raise = ((): number => ERRNO_NOSYS) as Fn
  for (const name of SOCKET_FUNCTIONS) own[name] = ((): number => ERRNO_NOSYS) as Fn

  if (config.clock !== 'real') {
    const start = BigInt(Math.round(config.startTime)) * 1_000_000n
    own.clock_time_get = ((id: number, _precision: bigint, out: number): number => {
      if (config.clock === 'none') return ERRNO_NOSYS
      if (id > 3) return ERRNO_INVAL
      mem()
      // Each read advances 1 µs, so loops waiting for time to pass still end.
      replay.tick += 1000n
      view.setBigUint64(out, (id === CLOCK_REALTIME ? start : 0n) + replay.tick, true)
      return ERRNO_SUCCESS
    }) as Fn
    own.clock_res_get = ((id: number, out: number): number => {
      if (config.clock === 'none') return ERRNO_NOSYS
      if (id > 3) return ERRNO_INVAL
      mem()
      view.setBigUint64(out, 1000n, true)
      return ERRNO_SUCCESS
    }) as Fn
  }
  if (config.random !== 'real') {
    own.random_get = ((ptr: number, len: number): number => {
      if (config.random === 'none') return ERRNO_NOSYS
      const memory = mem()
      if (ptr + len > memory.length) return ERRNO_INVAL
      let state = replay.random
      for (let i = 0; i < len; i++) {
        // xorshift32: not for secrets, for runs that repeat.
        state ^= state << 13
        state ^= state >>> 17
        state ^= state << 5
        memory[ptr + i] = state & 0xff
      }
      replay.random = state
      return ERRNO_SUCCESS
    }) as Fn
  }
  if (!config.preopens.some((p) => p.writable)) refuseWrites(own, base)
  else
    boundWrites(own, budget, () => {
      mem()
      return view
    })
  // The standard streams are pipes: a positioned write to one went into @wasmer/wasi's own
  // stdout buffer, which nothing reads, past every output and memory bound (2 GB in a test).
  const pwrite = own.fd_pwrite as (...a: Array<number | bigint>) => number
  own.fd_pwrite = ((fd: number, ...rest: Array<number | bigint>): number => (fd <= 2 ? ERRNO_SPIPE : pwrite(fd, ...rest))) as Fn
  return { [WASI_MODULE]: own as WebAssembly.ModuleImports }
}

/** No writable grant: nothing may create, change or delete a file. */
function refuseWrites(own: Record<string, Fn>, base: Record<string, Fn>): void {
  for (const name of MUTATING_PATH_FUNCTIONS) own[name] = ((): number => ERRNO_ROFS) as Fn
  const open = base.path_open as (...a: Array<number | bigint>) => number
  own.path_open = ((dirfd: number, dirflags: number, path: number, pathLen: number, oflags: number, rightsBase: bigint, rightsInheriting: bigint, fdflags: number, fd: number): number => {
    const writes = RIGHTS_FD_WRITE | RIGHTS_FD_ALLOCATE | RIGHTS_FD_FILESTAT_SET_SIZE
    if (oflags & (OFLAGS_CREAT | OFLAGS_TRUNC) || fdflags & FDFLAGS_APPEND) return ERRNO_ROFS
    // libc asks for every right it might use; take away the writing ones instead of refusing.
    return open(dirfd, dirflags, path, pathLen, oflags, rightsBase & ~writes, rightsInheriting & ~writes, fdflags, fd)
  }) as Fn
  const writeOwn = own.fd_write as (...a: number[]) => number
  own.fd_write = ((fd: number, iovs: number, count: number, nwritten: number): number => {
    if (fd > 2) return ERRNO_BADF
    return writeOwn(fd, iovs, count, nwritten)
  }) as Fn
}

/**
 * A writable grant: what the program writes to files counts against the file system's budget
 * (it lives in this process's memory), and past it a write fails with ENOSPC.
 */
function boundWrites(own: Record<string, Fn>, budget: { free: number }, view: () => DataView): void {
  for (const name of ['fd_write', 'fd_pwrite'] as const) {
    const inner = own[name] as (...a: Array<number | bigint>) => number
    own[name] = ((fd: number, iovs: number, count: number, ...rest: Array<number | bigint>): number => {
      if (fd <= 2) return inner(fd, iovs, count, ...rest)
      const v = view()
      let total = 0
      for (let i = 0; i < count; i++) total += v.getUint32(iovs + 8 * i + 4, true)
      if (total > budget.free) return ERRNO_NOSPC
      budget.free -= total
      return inner(fd, iovs, count, ...rest)
    }) as Fn
  }
  // A file grown without a write (ftruncate, posix_fallocate) is memory too: 1.5 GiB through
  // fd_filestat_set_size went past a 1 MiB budget. Charged at the size it may grow to, as a
  // write is charged whatever it overwrites.
  const grows: Array<[string, (...a: Array<number | bigint>) => number]> = [
    ['fd_filestat_set_size', (_fd, size) => Number(size)],
    ['fd_allocate', (_fd, offset, len) => Number(offset) + Number(len)],
  ]
  for (const [name, size] of grows) {
    const inner = own[name] as (...a: Array<number | bigint>) => number
    own[name] = ((...args: Array<number | bigint>): number => {
      const bytes = size(...args)
      if (bytes > budget.free) return ERRNO_NOSPC
      budget.free -= bytes
      return inner(...args)
    }) as Fn
  }
}
