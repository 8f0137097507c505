import { WasmSandboxError } from '../errors.js'
import { CorruptCheckpointError, decodeCheckpoint, decodeCheckpointInfo, encodeCheckpoint } from './codec.js'
import type { Checkpoint, CheckpointInfo, CheckpointStorage } from './types.js'

export interface MemoryCheckpointStorageOptions {
  /** How many of the newest checkpoints `save` leaves behind (default 3). */
  keep?: number
}

/** Throws ERR_WASM_INVALID_OPTION unless `keep` is a non-negative integer (or Infinity). */
export function checkKeep(keep: unknown, what: string): number {
  if (typeof keep !== 'number' || !(Number.isSafeInteger(keep) || keep === Infinity) || keep < 0) {
    throw new WasmSandboxError('ERR_WASM_INVALID_OPTION', `${what} must be a non-negative integer, got ${String(keep)}`)
  }
  return keep
}

/**
 * Keeps checkpoints in this process, for tests and for streams that only need to survive a
 * guest failure, not a crash of the process.
 *
 * It stores each checkpoint encoded, exactly as `FileCheckpointStorage` would write it: that
 * exercises the codec in tests, and it is a deep copy, so a caller that goes on mutating the
 * memory, globals or metadata it passed to `save` cannot change what was stored.
 */
export class MemoryCheckpointStorage implements CheckpointStorage {
  readonly keep: number
  /** Encoded checkpoints by sequence. */
  readonly #stored = new Map<number, Buffer>()

  constructor({ keep = 3 }: MemoryCheckpointStorageOptions = {}) {
    this.keep = checkKeep(keep, 'MemoryCheckpointStorage keep')
  }

  async save(checkpoint: Checkpoint): Promise<void> {
    const bytes = await encodeCheckpoint(checkpoint)
    this.#stored.set(checkpoint.sequence, bytes)
    this.#pruneNow(this.keep)
  }

  async loadLatest(): Promise<Checkpoint | undefined> {
    for (const sequence of this.#sequences().reverse()) {
      const bytes = this.#stored.get(sequence)
      if (bytes === undefined) continue // pruned while we were decoding a newer one
      try {
        return await decodeCheckpoint(bytes)
      } catch (err) {
        if (!(err instanceof CorruptCheckpointError)) throw err
      }
    }
    return undefined
  }

  async list(): Promise<CheckpointInfo[]> {
    const infos: CheckpointInfo[] = []
    for (const sequence of this.#sequences()) {
      try {
        infos.push(decodeCheckpointInfo(this.#stored.get(sequence)!))
      } catch (err) {
        if (!(err instanceof CorruptCheckpointError)) throw err
      }
    }
    return infos
  }

  async prune(keep: number): Promise<void> {
    this.#pruneNow(checkKeep(keep, 'prune(keep)'))
  }

  #sequences(): number[] {
    return [...this.#stored.keys()].sort((a, b) => a - b)
  }

  #pruneNow(keep: number): void {
    const sequences = this.#sequences()
    for (const sequence of sequences.slice(0, Math.max(0, sequences.length - keep))) this.#stored.delete(sequence)
  }
}
