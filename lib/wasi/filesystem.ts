import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import type { MemFS } from '@wasmer/wasi'
import { wasmer } from './wasmer.js'
import { errors } from '../errors.js'
import type { WasiConfig } from './options.js'

/** A mounted file system and the bytes a writable grant may still add to it. */
export interface MountedFileSystem {
  fs: MemFS
  free: number
}

/**
 * The granted host directories, read once: each program instance mounts a fresh in-memory file
 * system (@wasmer/wasi's MemFS) holding a copy of them and nothing else, so no path a program
 * makes up (absolute, `..`, `/proc`) can reach the host, and no run sees another's changes.
 * The whole copy is bounded by `maxFileSystemBytes`. Symbolic links are not followed (they could
 * point out of the grant).
 */
export class FileSystemImage {
  private readonly dirs: string[] = []
  private readonly files: Array<{ path: string; bytes: Buffer }> = []
  private readonly limit: number
  private used = 0

  constructor(config: WasiConfig) {
    this.limit = config.maxFileSystemBytes
    for (const grant of config.preopens) this.copy(grant.hostPath, grant.guestPath.replace(/\/+$/, ''))
  }

  mount(): MountedFileSystem {
    const fs = new (wasmer().MemFS)()
    for (const dir of this.dirs) fs.createDir(dir)
    for (const { path, bytes } of this.files) {
      const file = fs.open(path, { read: true, write: true, create: true })
      file.write(bytes)
      file.free()
    }
    return { fs, free: this.limit - this.used }
  }

  private copy(hostDir: string, guestDir: string): void {
    let at = ''
    for (const part of guestDir.split('/').filter(Boolean)) {
      at += `/${part}`
      if (!this.dirs.includes(at)) this.dirs.push(at)
    }
    for (const entry of readdirSync(hostDir, { withFileTypes: true })) {
      const host = join(hostDir, entry.name)
      const guest = `${guestDir}/${entry.name}`
      if (entry.isDirectory()) this.copy(host, guest)
      else if (entry.isFile()) {
        const size = statSync(host).size
        if (this.used + size > this.limit) {
          throw errors.invalidOption(
            `wasi.preopens: the granted files pass wasi.maxFileSystemBytes (${this.limit}) at ${host}; grant a smaller directory or raise the limit`,
          )
        }
        this.used += size
        this.files.push({ path: guest, bytes: readFileSync(host) })
      }
    }
  }
}
