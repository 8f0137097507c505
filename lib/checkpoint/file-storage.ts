import { randomBytes } from 'node:crypto'
import { mkdir, open, readFile, readdir, rename, unlink } from 'node:fs/promises'
import path from 'node:path'
import createDebug from 'debug'
import { CorruptCheckpointError, decodeCheckpoint, decodeCheckpointInfo, encodeCheckpoint } from './codec.js'
import { checkKeep } from './memory-storage.js'
import type { Checkpoint, CheckpointInfo, CheckpointStorage } from './types.js'

const debug = createDebug('wasm-sandbox:checkpoint')

const FILE_NAME = /^checkpoint-(\d{12,})\.wsck$/
const TEMP_PREFIX = '.tmp-'

export interface FileCheckpointStorageOptions {
  /** How many of the newest checkpoints `save` leaves behind (default 3). */
  keep?: number
  /**
   * fsync each checkpoint file and the directory before `save` resolves (default true). Turning
   * it off keeps the rename's atomicity against a crash of the process, but not against a crash
   * of the machine: after a power loss the newest file may be empty or torn, and `loadLatest`
   * then falls back to an older one.
   */
  fsync?: boolean
}

/** `checkpoint-000000000042.wsck`: zero-padded so a plain `ls` lists them in order too. */
export function checkpointFileName(sequence: number): string {
  return `checkpoint-${String(sequence).padStart(12, '0')}.wsck`
}

/**
 * Keeps checkpoints as files in one directory, one file per checkpoint, named by sequence.
 *
 * Crash safety comes from never writing under a final name. `save` writes the whole checkpoint
 * to a temporary file in the same directory, fsyncs it, and only then renames it to
 * `checkpoint-<sequence>.wsck`. A rename within one filesystem is atomic, so the final name
 * refers either to nothing (or the old file of that sequence) or to the complete new file;
 * fsyncing the file before the rename means the name cannot become durable before the data it
 * points to, and fsyncing the directory after it makes the rename itself durable before `save`
 * resolves. A crash at any point therefore leaves the previous set of checkpoints or the new
 * one, plus perhaps a `.tmp-*` file, which the next `save` or `prune` deletes. Every file also
 * carries a checksum (see codec.ts), so damage the rename cannot prevent (a disk that lies about
 * fsync, `fsync: false` and a power cut, bit rot) is detected on load, and `loadLatest` falls
 * back to the newest checkpoint that is intact.
 *
 * One directory is meant for one writer, that is one stream: the temporary files of saves in
 * flight in this instance are spared by cleanup, but those of another process are not.
 *
 * Implementing your own storage: the same rule carries over — make a checkpoint visible under
 * the name readers look for only once it is complete, and verify it on the way back in
 * (`encodeCheckpoint`/`decodeCheckpoint` do the verifying; skip a `CorruptCheckpointError`).
 * For S3, put the object under a temporary key and copy it to the final key (or rely on a single
 * PUT being atomic and list by key prefix); for Redis, store the bytes and index the sequence in
 * one MULTI with SET + ZADD, so that readers never see an index entry without its data; for a
 * database, one transaction per save. `prune` should delete by sequence order, oldest first.
 */
export class FileCheckpointStorage implements CheckpointStorage {
  readonly dir: string
  readonly keep: number
  readonly fsync: boolean
  /** Temporary files of saves in flight here, which cleanup must not take for crash leftovers. */
  readonly #inFlight = new Set<string>()

  constructor(dir: string, { keep = 3, fsync = true }: FileCheckpointStorageOptions = {}) {
    if (typeof dir !== 'string' || dir === '') {
      throw new TypeError('FileCheckpointStorage needs a directory path')
    }
    this.dir = dir
    this.keep = checkKeep(keep, 'FileCheckpointStorage keep')
    this.fsync = fsync
  }

  /** Atomically writes `checkpoint` (see the class doc), then prunes to `keep`. */
  async save(checkpoint: Checkpoint): Promise<void> {
    const bytes = await encodeCheckpoint(checkpoint)
    await mkdir(this.dir, { recursive: true })
    const tempName = `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`
    const tempPath = path.join(this.dir, tempName)
    this.#inFlight.add(tempName)
    try {
      // 'wx': a fresh file, never one that someone else is writing. 0o600: guest memory may hold
      // whatever the stream carries.
      const file = await open(tempPath, 'wx', 0o600)
      try {
        await file.writeFile(bytes)
        if (this.fsync) await file.sync()
      } finally {
        await file.close()
      }
      await rename(tempPath, path.join(this.dir, checkpointFileName(checkpoint.sequence)))
    } catch (err) {
      await unlink(tempPath).catch(() => {})
      throw err
    } finally {
      this.#inFlight.delete(tempName)
    }
    if (this.fsync) await this.#syncDir()
    await this.prune(this.keep)
  }

  /** The newest checkpoint that decodes; torn or corrupt newer files are skipped (and logged). */
  async loadLatest(): Promise<Checkpoint | undefined> {
    const entries = await this.#entries()
    for (const { name, sequence } of entries.checkpoints.reverse()) {
      const bytes = await this.#read(name)
      if (bytes === undefined) continue
      try {
        const checkpoint = await decodeCheckpoint(bytes)
        if (checkpoint.sequence !== sequence) {
          throw new CorruptCheckpointError(`${name} holds checkpoint ${checkpoint.sequence}, not ${sequence}`)
        }
        return checkpoint
      } catch (err) {
        if (!(err instanceof CorruptCheckpointError)) throw err
        debug('skipping corrupt checkpoint %s: %s', path.join(this.dir, name), err.message)
      }
    }
    return undefined
  }

  /** Intact checkpoints, oldest first, with `storedBytes` the file size. Reads (but does not inflate) each one. */
  async list(): Promise<CheckpointInfo[]> {
    const infos: CheckpointInfo[] = []
    for (const { name, sequence } of (await this.#entries()).checkpoints) {
      const bytes = await this.#read(name)
      if (bytes === undefined) continue
      try {
        const info = decodeCheckpointInfo(bytes)
        if (info.sequence !== sequence) {
          throw new CorruptCheckpointError(`${name} holds checkpoint ${info.sequence}, not ${sequence}`)
        }
        infos.push(info)
      } catch (err) {
        if (!(err instanceof CorruptCheckpointError)) throw err
        debug('listing skips corrupt checkpoint %s: %s', path.join(this.dir, name), err.message)
      }
    }
    return infos
  }

  /**
   * Deletes all but the newest `keep` checkpoint files by sequence, intact or not (it does not
   * read them), and any temporary files left by a crashed save. Oldest go first, so a crash
   * midway leaves extra old checkpoints, never a gap before the newest.
   */
  async prune(keep: number): Promise<void> {
    checkKeep(keep, 'prune(keep)')
    const { checkpoints, temps } = await this.#entries()
    const doomed = checkpoints.slice(0, Math.max(0, checkpoints.length - keep)).map((e) => e.name)
    for (const name of temps) {
      if (!this.#inFlight.has(name)) doomed.push(name)
    }
    for (const name of doomed) {
      try {
        await unlink(path.join(this.dir, name))
        debug('pruned %s', path.join(this.dir, name))
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err // another prune got it first
      }
    }
  }

  /** Checkpoint files sorted by sequence (oldest first) and temporary files; empty if there is no directory. */
  async #entries(): Promise<{ checkpoints: { name: string; sequence: number }[]; temps: string[] }> {
    let names: string[]
    try {
      names = await readdir(this.dir)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { checkpoints: [], temps: [] }
      throw err
    }
    const checkpoints: { name: string; sequence: number }[] = []
    const temps: string[] = []
    for (const name of names) {
      const match = FILE_NAME.exec(name)
      if (match !== null) {
        const sequence = Number(match[1])
        if (Number.isSafeInteger(sequence)) checkpoints.push({ name, sequence })
      } else if (name.startsWith(TEMP_PREFIX)) {
        temps.push(name)
      }
    }
    // By the number, not the name: past 12 digits the names stop sorting as strings.
    checkpoints.sort((a, b) => a.sequence - b.sequence)
    return { checkpoints, temps }
  }

  /** The file's bytes, or undefined if it vanished since readdir (a concurrent prune). */
  async #read(name: string): Promise<Buffer | undefined> {
    try {
      return await readFile(path.join(this.dir, name))
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
  }

  /**
   * Makes the rename durable: on POSIX a directory entry is only guaranteed to survive a crash
   * once the directory itself is fsynced. Windows cannot open a directory this way (EISDIR /
   * EPERM), and some filesystems refuse fsync on one (EINVAL); there is nothing more to do there.
   */
  async #syncDir(): Promise<void> {
    let dir
    try {
      dir = await open(this.dir, 'r')
      await dir.sync()
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code !== 'EISDIR' && code !== 'EPERM' && code !== 'EINVAL') throw err
    } finally {
      await dir?.close()
    }
  }
}
