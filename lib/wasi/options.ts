import { statSync } from 'node:fs'
import { resolve } from 'node:path'
import { errors } from '../errors.js'

/**
 * `'stream'`: one run of the program over the whole stream (stdin is the input as it arrives).
 * `'record'`: a fresh run per record (with `delimiter`) or per chunk, stdin that record.
 */
export type WasiMode = 'stream' | 'record'

export interface WasiDirectoryGrant {
  /** Host directory whose files are copied into the program's in-memory file system. */
  path: string
  /** Let the program create, change and delete files there (in its copy). Default false. */
  writable?: boolean
}

/** What a WASI program may see. Nothing is granted unless named here. */
export interface WasiOptions {
  /** Default `'stream'`. */
  mode?: WasiMode
  /** `argv`, program name included. Default `[<module file name>]`. */
  args?: string[]
  /** Environment variables. Default none. */
  env?: Record<string, string>
  /**
   * Directories the program may open, by the path it sees (e.g. `'/data'`): a host directory
   * path (read-only) or `{ path, writable }`. Default none.
   */
  preopens?: Record<string, string | WasiDirectoryGrant>
  /** Bytes of host files a grant may copy in, and the program's file system may hold. Default 64 MiB. */
  maxFileSystemBytes?: number
  /** `'real'` (default), `'fixed'` (a clock at `startTime` that advances 1 µs per read), or `'none'`. */
  clock?: 'real' | 'fixed' | 'none'
  /** `'real'` (default, crypto), `'seeded'` (a PRNG from `seed`, so a run repeats), or `'none'`. */
  random?: 'real' | 'seeded' | 'none'
  /** With `clock: 'fixed'`: milliseconds since the epoch. Default 0. */
  startTime?: number
  /** With `random: 'seeded'`. Default 1. */
  seed?: number
  /** Where the program's stderr also goes (e.g. `process.stderr`); it is always emitted as `'stderr'`. */
  stderr?: NodeJS.WritableStream
}

/** The part of the WASI options that crosses into a worker (no streams, no functions). */
export interface WasiConfig {
  mode: WasiMode
  args: string[] | undefined
  env: Record<string, string>
  preopens: Array<{ guestPath: string; hostPath: string; writable: boolean }>
  maxFileSystemBytes: number
  clock: 'real' | 'fixed' | 'none'
  random: 'real' | 'seeded' | 'none'
  startTime: number
  seed: number
  /** The stream's `delimiter`: in record mode, one run per record it ends. */
  delimiter: Uint8Array | undefined
}

export interface ResolvedWasi extends WasiConfig {
  stderr: NodeJS.WritableStream | undefined
}

const KEYS = new Set(['mode', 'args', 'env', 'preopens', 'maxFileSystemBytes', 'clock', 'random', 'startTime', 'seed', 'stderr'])
export const DEFAULT_MAX_FILE_SYSTEM_BYTES = 64 * 1024 * 1024

function oneOf<T extends string>(name: string, value: unknown, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback
  if (allowed.includes(value as T)) return value as T
  throw errors.invalidOption(`wasi.${name} must be ${allowed.map((a) => `'${a}'`).join(', ')}, got ${JSON.stringify(value)}`)
}

function stringRecord(name: string, value: unknown): Record<string, string> {
  if (value === undefined) return {}
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw errors.invalidOption(`wasi.${name} must be an object of strings`)
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string' || k.includes('=') || k.includes('\0') || v.includes('\0')) {
      throw errors.invalidOption(`wasi.${name}.${k} must be a string (and the name has no '=' or NUL)`)
    }
  }
  return { ...(value as Record<string, string>) }
}

function resolvePreopens(value: unknown): WasiConfig['preopens'] {
  if (value === undefined) return []
  if (typeof value !== 'object' || value === null) throw errors.invalidOption('wasi.preopens must be an object: { guestPath: hostDir | { path, writable } }')
  return Object.entries(value as Record<string, unknown>).map(([guestPath, grant]) => {
    const g = typeof grant === 'string' ? { path: grant } : (grant as WasiDirectoryGrant)
    if (!guestPath.startsWith('/') || guestPath.split('/').includes('..')) {
      throw errors.invalidOption(`wasi.preopens: '${guestPath}' must be an absolute path without '..' (the path the program sees)`)
    }
    if (typeof g !== 'object' || g === null || typeof g.path !== 'string') {
      throw errors.invalidOption(`wasi.preopens['${guestPath}'] must be a host directory path or { path, writable }`)
    }
    const hostPath = resolve(g.path)
    let isDir = false
    try {
      isDir = statSync(hostPath).isDirectory()
    } catch {
      isDir = false
    }
    if (!isDir) throw errors.invalidOption(`wasi.preopens['${guestPath}']: ${hostPath} is not a directory`)
    return { guestPath, hostPath, writable: g.writable === true }
  })
}

/** Validates `wasi` once, with the other options. */
export function resolveWasi(value: unknown): ResolvedWasi | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'object' || value === null) throw errors.invalidOption('wasi must be an object')
  const unknown = Object.keys(value).filter((k) => !KEYS.has(k))
  if (unknown.length > 0) throw errors.invalidOption(`Unknown wasi option: ${unknown.join(', ')}. Known ones are ${[...KEYS].join(', ')}.`)
  const w = value as WasiOptions
  if (w.args !== undefined && (!Array.isArray(w.args) || !w.args.every((a) => typeof a === 'string' && !a.includes('\0')))) {
    throw errors.invalidOption('wasi.args must be an array of strings')
  }
  const maxFileSystemBytes = w.maxFileSystemBytes ?? DEFAULT_MAX_FILE_SYSTEM_BYTES
  if (!Number.isInteger(maxFileSystemBytes) || maxFileSystemBytes < 0) throw errors.invalidOption('wasi.maxFileSystemBytes must be a non-negative integer')
  for (const key of ['startTime', 'seed'] as const) {
    if (w[key] !== undefined && !Number.isFinite(w[key])) throw errors.invalidOption(`wasi.${key} must be a finite number`)
  }
  if (w.stderr !== undefined && typeof (w.stderr as { write?: unknown }).write !== 'function') {
    throw errors.invalidOption('wasi.stderr must be a writable stream (e.g. process.stderr)')
  }
  return {
    mode: oneOf('mode', w.mode, ['stream', 'record'] as const, 'stream'),
    args: w.args ? [...w.args] : undefined,
    env: stringRecord('env', w.env),
    preopens: resolvePreopens(w.preopens),
    maxFileSystemBytes,
    clock: oneOf('clock', w.clock, ['real', 'fixed', 'none'] as const, 'real'),
    random: oneOf('random', w.random, ['real', 'seeded', 'none'] as const, 'real'),
    startTime: w.startTime ?? 0,
    seed: w.seed ?? 1,
    delimiter: undefined,
    stderr: w.stderr,
  }
}

/** The worker's copy: everything but the stderr stream. */
export function wasiConfig(resolved: ResolvedWasi): WasiConfig {
  const { stderr: _stderr, ...config } = resolved
  return config
}
