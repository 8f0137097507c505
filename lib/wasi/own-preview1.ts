import { randomFillSync } from 'node:crypto'
import { ERRNO_BADF, ERRNO_INVAL, ERRNO_NOSYS, ERRNO_SPIPE, ERRNO_SUCCESS, WASI_PREVIEW1_FUNCTIONS } from './preview1.js'
import type { WasiConfig } from './options.js'

type Fn = (...args: never[]) => unknown

const FILETYPE_CHARACTER_DEVICE = 2
const ALL_RIGHTS = 0x1fffffffn
const EVENTTYPE_CLOCK = 0

/** Views of the program's memory, renewed when it grows. */
export interface MemoryViews {
  bytes(): Uint8Array
  view(): DataView
}

/**
 * Preview 1 for a program granted no directory: the host's own, with no @wasmer/wasi object
 * behind it. Measured (bench/wasi.ts, per-record grep): a wasmer WASI per run costs about
 * 760 µs of CPU (getImports alone 330 µs) against 370 µs for an instance over imports built
 * once; loading and initialising wasmer adds about 100 ms to every worker. With no file system
 * there is little left to serve: arguments, environment, clocks, random, the standard streams'
 * descriptors, and `EBADF` for every other descriptor (there are no preopens to find).
 * fd_read/fd_write, proc_exit and the clock/random overrides are laid on top by `wasiImports`.
 */
export function ownPreview1(config: WasiConfig, args: readonly string[], memory: MemoryViews): Record<string, Fn> {
  const encoder = new TextEncoder()
  const argv = args.map((a) => encoder.encode(`${a}\0`))
  const environ = Object.entries(config.env).map(([k, v]) => encoder.encode(`${k}=${v}\0`))

  const strings = (list: Uint8Array[]) => ({
    sizes: (countPtr: number, sizePtr: number): number => {
      const view = memory.view()
      view.setUint32(countPtr, list.length, true)
      view.setUint32(sizePtr, list.reduce((n, s) => n + s.length, 0), true)
      return ERRNO_SUCCESS
    },
    get: (pointers: number, buffer: number): number => {
      const view = memory.view()
      const bytes = memory.bytes()
      let at = buffer
      list.forEach((s, i) => {
        view.setUint32(pointers + 4 * i, at, true)
        bytes.set(s, at)
        at += s.length
      })
      return ERRNO_SUCCESS
    },
  })
  const a = strings(argv)
  const e = strings(environ)
  const standard = (fd: number): boolean => fd >= 0 && fd <= 2

  const own: Record<string, Fn> = {
    args_sizes_get: a.sizes as Fn,
    args_get: a.get as Fn,
    environ_sizes_get: e.sizes as Fn,
    environ_get: e.get as Fn,
    clock_res_get: ((_id: number, out: number): number => {
      memory.view().setBigUint64(out, 1000n, true)
      return ERRNO_SUCCESS
    }) as Fn,
    clock_time_get: ((id: number, _precision: bigint, out: number): number => {
      if (id > 3) return ERRNO_INVAL
      const ns = id === 0 ? BigInt(Date.now()) * 1_000_000n : process.hrtime.bigint()
      memory.view().setBigUint64(out, ns, true)
      return ERRNO_SUCCESS
    }) as Fn,
    random_get: ((ptr: number, len: number): number => {
      randomFillSync(memory.bytes(), ptr, len)
      return ERRNO_SUCCESS
    }) as Fn,
    fd_fdstat_get: ((fd: number, out: number): number => {
      if (!standard(fd)) return ERRNO_BADF
      const view = memory.view()
      view.setUint8(out, FILETYPE_CHARACTER_DEVICE)
      view.setUint16(out + 2, 0, true)
      view.setBigUint64(out + 8, ALL_RIGHTS, true)
      view.setBigUint64(out + 16, 0n, true)
      return ERRNO_SUCCESS
    }) as Fn,
    fd_fdstat_set_flags: ((fd: number): number => (standard(fd) ? ERRNO_SUCCESS : ERRNO_BADF)) as Fn,
    fd_filestat_get: ((fd: number, out: number): number => {
      if (!standard(fd)) return ERRNO_BADF
      memory.bytes().fill(0, out, out + 64)
      memory.view().setUint8(out + 16, FILETYPE_CHARACTER_DEVICE)
      return ERRNO_SUCCESS
    }) as Fn,
    fd_close: ((fd: number): number => (standard(fd) ? ERRNO_SUCCESS : ERRNO_BADF)) as Fn,
    fd_seek: ((fd: number): number => (standard(fd) ? ERRNO_SPIPE : ERRNO_BADF)) as Fn,
    fd_tell: ((fd: number): number => (standard(fd) ? ERRNO_SPIPE : ERRNO_BADF)) as Fn,
    sched_yield: ((): number => ERRNO_SUCCESS) as Fn,
    poll_oneoff: ((input: number, output: number, count: number, nevents: number): number => {
      // Descriptors are always ready (reads block in fd_read itself); a clock fires at once,
      // which ends a sleep early rather than block the worker's thread.
      const view = memory.view()
      for (let i = 0; i < count; i++) {
        const sub = input + 48 * i
        const out = output + 32 * i
        view.setBigUint64(out, view.getBigUint64(sub, true), true)
        view.setUint16(out + 8, ERRNO_SUCCESS, true)
        const type = view.getUint8(sub + 8)
        view.setUint8(out + 10, type)
        if (type !== EVENTTYPE_CLOCK) memory.bytes().fill(0, out + 16, out + 32)
      }
      view.setUint32(nevents, count, true)
      return ERRNO_SUCCESS
    }) as Fn,
  }
  // Everything else concerns descriptors that do not exist.
  for (const name of WASI_PREVIEW1_FUNCTIONS) own[name] ??= ((): number => (name.startsWith('fd_') || name.startsWith('path_') ? ERRNO_BADF : ERRNO_NOSYS)) as Fn
  return own
}
