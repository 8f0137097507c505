import { randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream, fstatSync, unlinkSync } from 'node:fs'
import { open, realpath, rename, stat, unlink, type FileHandle } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import type { Readable, Writable } from 'node:stream'
import { BatchedWriter } from './batched-writer.js'
import { UsageError } from './options.js'

/** Where the output goes, and what becomes of it when the run succeeds or fails. */
export interface Output {
  stream: Writable
  commit(): Promise<void>
  discard(): Promise<void>
  /** For a signal or an exit: no turn of the event loop is left to do it asynchronously. */
  discardSync(): void
}

/**
 * Bytes buffered before a write to a file or device: 64 KiB writes went one thread-pool round trip
 * at a time. `upper` from a 512 MiB file to `> out` in RAM, eight rounds in turn with tr: 1.21 s
 * with Node's file stream and MiB reads, 1.05 s batched a MiB at a time, 1.01 s at 4 MiB.
 */
const WRITE_BUFFER = 4 * 1024 * 1024
/** The longest output waits for its batch to fill: a slow stream's output still reaches the file promptly. */
const WRITE_DELAY_MS = 10

/**
 * Standard output. Redirected to a regular file (`> out`), Node's own `process.stdout` writes
 * synchronously, a chunk at a time on the main thread (512 MiB took 2.6-3 s against 1.7 s with
 * `-o`): batches of WRITE_BUFFER go from the thread pool instead (BatchedWriter). Left open:
 * the process still owns its stdout.
 */
export function standardOutput(): Output {
  const stream = isRegularFile(1) ? new BatchedWriter(1, WRITE_BUFFER, WRITE_DELAY_MS) : process.stdout
  return { stream, commit: async () => {}, discard: async () => {}, discardSync: () => {} }
}

/** Standard input; from a regular file (`< in`), read `readBytes` at a time, as a named input is. */
export function standardInput(readBytes: number): Readable {
  return isRegularFile(0) ? createReadStream('', { fd: 0, autoClose: false, highWaterMark: readBytes }) : process.stdin
}

function isRegularFile(fd: number): boolean {
  try {
    return fstatSync(fd).isFile()
  } catch {
    return false
  }
}

/**
 * A regular file, replaced only when the run succeeds: the output goes to a temporary file in
 * the same directory (so the rename is atomic), is fsync'd, then renamed over the target. Until
 * then the target is untouched, so a bad module, a trapping guest or a kill leaves it as it was.
 */
async function replacingFile(target: string, mode: number | undefined): Promise<Output> {
  const temp = join(dirname(target), `.${basename(target)}.${randomBytes(6).toString('hex')}.tmp`)
  // 'wx': a file of that name that is not ours is never reused, nor later removed.
  const handle: FileHandle = await open(temp, 'wx').catch((err: NodeJS.ErrnoException) => {
    throw new Error(`cannot write ${target}: ${err.code ?? err.message} creating a temporary file beside it (${temp})`, { cause: err })
  })
  let settled = false
  const output: Output = {
    // The temporary file is new, so its own offset is where the output goes.
    stream: new BatchedWriter(handle.fd, WRITE_BUFFER, WRITE_DELAY_MS),
    async commit() {
      // Durable before the rename, which must never expose a file still in the page cache.
      await handle.sync()
      await handle.close()
      await rename(temp, target)
      settled = true
    },
    async discard() {
      if (settled) return
      settled = true
      output.stream.destroy()
      // Not under a write in flight (BatchedWriter's 'close' waits for it). Not `once`: it
      // rejects on the 'error' a failed pipeline's destroy emits before that 'close'.
      if (!output.stream.closed) await new Promise((resolve) => output.stream.once('close', resolve))
      await handle.close().catch(() => {})
      await unlink(temp).catch(() => {})
    },
    discardSync() {
      if (settled) return
      settled = true
      try {
        unlinkSync(temp)
      } catch {
        // Already gone: nothing to clean up.
      }
    },
  }
  if (mode !== undefined) {
    // The replacement keeps the permissions the user gave the file it replaces.
    await handle.chmod(mode & 0o7777).catch(async (err: unknown) => {
      await output.discard()
      throw err
    })
  }
  return output
}

/** What `-o path` names now: nothing yet, a regular file, or something written in place. */
export async function outputTarget(path: string): Promise<{ kind: 'new' | 'file' | 'device'; mode?: number; real: string }> {
  const existing = await stat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined
    throw err
  })
  if (existing?.isDirectory()) throw new UsageError(`-o ${path} is a directory; name a file to write`)
  if (!existing) return { kind: 'new', real: path }
  if (!existing.isFile()) return { kind: 'device', real: path }
  // Through a symlink, the file it points to is replaced and the link kept.
  return { kind: 'file', mode: existing.mode, real: await realpath(path) }
}

export async function openOutput(path: string): Promise<Output> {
  const target = await outputTarget(path)
  // A device or a pipe (/dev/null, a FIFO) is written in place: renaming a file over it would
  // replace the device itself, and truncating one loses nothing.
  if (target.kind === 'device') {
    const stream = createWriteStream(path, { highWaterMark: WRITE_BUFFER })
    return { stream, commit: async () => {}, discard: async () => void stream.destroy(), discardSync: () => {} }
  }
  return replacingFile(target.real, target.mode)
}
