import type { WASI } from '@wasmer/wasi'
import type { WasiConfig } from './options.js'
import type { MemoryViews } from './own-preview1.js'
import { Grants, siblings, type Place } from './grants.js'
import {
  CLOCK_REALTIME,
  ERRNO_BADF,
  ERRNO_INVAL,
  ERRNO_NOSPC,
  ERRNO_NOSYS,
  ERRNO_PERM,
  ERRNO_ROFS,
  ERRNO_SPIPE,
  ERRNO_SUCCESS,
  ERRNO_XDEV,
  FDFLAGS_APPEND,
  FILESTAT_FILETYPE,
  FILESTAT_SIZE,
  FILETYPE_DIRECTORY,
  OFLAGS_CREAT,
  OFLAGS_TRUNC,
  SOCKET_FUNCTIONS,
  WASI_MODULE,
  WRITE_RIGHTS,
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
 * seeded random for deterministic runs, and refusals (sockets; writes outside writable
 * grants).
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
  grantWrites(own, new Grants(config.preopens), budget, views)
  // The standard streams are pipes: a positioned write to one went into @wasmer/wasi's own
  // stdout buffer, which nothing reads, past every output and memory bound (2 GB in a test).
  const pwrite = own.fd_pwrite as (...a: Array<number | bigint>) => number
  own.fd_pwrite = ((fd: number, ...rest: Array<number | bigint>): number => (fd <= 2 ? ERRNO_SPIPE : pwrite(fd, ...rest))) as Fn
  return { [WASI_MODULE]: own as WebAssembly.ModuleImports }
}

/**
 * Changes to the file system only inside writable grants (lib/wasi/grants.ts judges each path and
 * descriptor): elsewhere, what creates, changes or deletes a file fails with EROFS, a write to a
 * descriptor with EBADF, and `path_open` drops the write rights libc asks for. What is written
 * inside counts against the file system's budget (it lives in this process's memory): past it a
 * write fails with ENOSPC.
 */
function grantWrites(own: Record<string, Fn>, grants: Grants, budget: { free: number }, views: MemoryViews): void {
  type Call = (...a: Array<number | bigint>) => number
  const inner = (name: string): Call => own[name] as Call
  const decoder = new TextDecoder('utf-8', { fatal: true })
  // Not in memory, or not UTF-8: @wasmer/wasi refuses it too.
  const text = (ptr: number, len: number): string | undefined => {
    const bytes = views.bytes()
    const start = ptr >>> 0
    const end = start + (len >>> 0)
    if (end > bytes.length) return undefined
    try {
      return decoder.decode(bytes.subarray(start, end))
    } catch {
      return undefined
    }
  }
  /** Where a path argument leads (an entry's place for a call that adds, removes or renames one). */
  const at = (fd: number, ptr: number, len: number, entry = false): Place | undefined => {
    const path = text(ptr, len)
    if (path === undefined) return undefined
    return entry ? grants.entry(fd, path) : grants.resolve(fd, path)
  }
  // wasmer writes the answer (a filestat) into the program's memory: its first 64 bytes are lent
  // for the call and put back.
  const stat = inner('path_filestat_get')
  const isDirectory = (fd: number, path: number, len: number): boolean => {
    const saved = views.bytes().slice(0, FILESTAT_SIZE)
    const errno = stat(fd, 0, path, len, 0)
    const type = views.bytes()[FILESTAT_FILETYPE]
    views.bytes().set(saved, 0)
    return errno === ERRNO_SUCCESS && type === FILETYPE_DIRECTORY
  }

  const open = inner('path_open')
  own.path_open = ((fd: number, dirflags: number, path: number, len: number, oflags: number, rightsBase: bigint, rightsInheriting: bigint, fdflags: number, out: number): number => {
    const place = at(fd, path, len)
    if (!grants.writable(place)) {
      if (oflags & (OFLAGS_CREAT | OFLAGS_TRUNC) || fdflags & FDFLAGS_APPEND) return ERRNO_ROFS
      // libc asks for every right it might use; take away the writing ones instead of refusing.
      rightsBase &= ~WRITE_RIGHTS
      // What is opened through this descriptor is judged at its own path_open.
      if (!grants.anyWritable) rightsInheriting &= ~WRITE_RIGHTS
    }
    const errno = open(fd, dirflags, path, len, oflags, rightsBase, rightsInheriting, fdflags, out)
    if (errno === ERRNO_SUCCESS) grants.opened(views.view().getUint32(out >>> 0, true), place)
    return errno
  }) as Fn
  const close = inner('fd_close')
  own.fd_close = ((fd: number): number => {
    const errno = close(fd)
    if (errno === ERRNO_SUCCESS) grants.closed(fd)
    return errno
  }) as Fn
  const renumber = inner('fd_renumber')
  own.fd_renumber = ((from: number, to: number): number => {
    const errno = renumber(from, to)
    if (errno === ERRNO_SUCCESS) grants.renumbered(from, to)
    return errno
  }) as Fn

  for (const name of ['path_remove_directory', 'path_unlink_file'] as const) {
    const call = inner(name)
    own[name] = ((fd: number, path: number, len: number): number => (grants.writable(at(fd, path, len, true)) ? call(fd, path, len) : ERRNO_ROFS)) as Fn
  }
  const mkdir = inner('path_create_directory')
  own.path_create_directory = ((fd: number, path: number, len: number): number => {
    const p = text(path, len)
    return p !== undefined && grants.mayCreateDirectory(fd, p) ? mkdir(fd, path, len) : ERRNO_ROFS
  }) as Fn
  const times = inner('path_filestat_set_times')
  own.path_filestat_set_times = ((fd: number, flags: number, path: number, len: number, ...rest: Array<number | bigint>): number =>
    grants.writable(at(fd, path, len)) ? times(fd, flags, path, len, ...rest) : ERRNO_ROFS) as Fn
  // wasmer follows a link to a directory, so a path that reads as inside a writable grant could
  // lead anywhere (and it traps on a link to a file): none are made.
  own.path_symlink = ((_target: number, _targetLen: number, fd: number, path: number, len: number): number =>
    grants.writable(at(fd, path, len, true)) ? ERRNO_PERM : ERRNO_ROFS) as Fn
  // Both ends inside writable grants: a read-only file moved or linked into a writable directory
  // would be writable there. A directory moved to another one, or linked, keeps its old parent
  // for `..` in wasmer, and a path through it would then lie about where it leads: a link is
  // EPERM (POSIX has none either), a move EXDEV, as across file systems (`mv` copies instead).
  const link = inner('path_link')
  own.path_link = ((fd: number, flags: number, path: number, len: number, toFd: number, toPath: number, toLen: number): number => {
    if (!grants.writable(at(fd, path, len, true)) || !grants.writable(at(toFd, toPath, toLen, true))) return ERRNO_ROFS
    return isDirectory(fd, path, len) ? ERRNO_PERM : link(fd, flags, path, len, toFd, toPath, toLen)
  }) as Fn
  const rename = inner('path_rename')
  own.path_rename = ((fd: number, path: number, len: number, toFd: number, toPath: number, toLen: number): number => {
    const from = at(fd, path, len, true)
    const to = at(toFd, toPath, toLen, true)
    if (!grants.writable(from) || !grants.writable(to)) return ERRNO_ROFS
    return !siblings(from, to) && isDirectory(fd, path, len) ? ERRNO_XDEV : rename(fd, path, len, toFd, toPath, toLen)
  }) as Fn

  /**
   * Runs `call` charged `bytes`; past the budget it fails with ENOSPC. A call that fails keeps its
   * charge: @wasmer/wasi writes before it stores `nwritten`, so a bad pointer there failed the
   * call with the bytes written, and a refund let a program grow files past every bound.
   */
  const charged = (bytes: number, call: () => number): number => {
    if (bytes > budget.free) return ERRNO_NOSPC
    budget.free -= bytes
    return call()
  }
  for (const name of ['fd_write', 'fd_pwrite'] as const) {
    const call = inner(name)
    own[name] = ((fd: number, iovs: number, count: number, ...rest: Array<number | bigint>): number => {
      // The standard streams are the runner's; a file renumbered onto one is judged as any other.
      if (fd <= 2 && !grants.has(fd)) return call(fd, iovs, count, ...rest)
      if (!grants.writableFd(fd)) return name === 'fd_write' ? ERRNO_BADF : ERRNO_ROFS
      const v = views.view()
      let total = 0
      for (let i = 0; i < count; i++) total += v.getUint32(iovs + 8 * i + 4, true)
      return charged(total, () => call(fd, iovs, count, ...rest))
    }) as Fn
  }
  // A file grown without a write (ftruncate, posix_fallocate) is memory too: 1.5 GiB through
  // fd_filestat_set_size went past a 1 MiB budget. Charged at the size it may grow to, as a
  // write is charged whatever it overwrites.
  // The sizes are u64 read as signed i64: a negative one, taken as it came, gave budget back.
  const u64 = (value: number | bigint): number => Number(BigInt.asUintN(64, BigInt(value)))
  const grows: Array<[string, (...a: Array<number | bigint>) => number]> = [
    ['fd_filestat_set_size', (_fd, size) => u64(size!)],
    ['fd_allocate', (_fd, offset, len) => u64(offset!) + u64(len!)],
  ]
  for (const [name, size] of grows) {
    const call = inner(name)
    own[name] = ((fd: number, ...rest: Array<number | bigint>): number => {
      if (!grants.writableFd(fd)) return ERRNO_ROFS
      return charged(size(fd, ...rest), () => call(fd, ...rest))
    }) as Fn
  }
  const fdTimes = inner('fd_filestat_set_times')
  own.fd_filestat_set_times = ((fd: number, ...rest: Array<number | bigint>): number => (grants.writableFd(fd) ? fdTimes(fd, ...rest) : ERRNO_ROFS)) as Fn
}
