/** The guest's state, captured without its help: all of linear memory plus its mutable globals. */
export interface GuestState {
  /** A copy of the guest's whole linear memory. */
  memory: Uint8Array
  /** Mutable global values, in the order of `LoadedGuest.globals` (i64 as bigint). */
  globals: (number | bigint)[]
  /** The input region the host had the guest allocate, reused on restore instead of calling alloc. */
  region: { ptr: number; size: number }
}

/**
 * A consistent cut of a stream, taken while the executor is between chunks: every input byte
 * before `inputOffset` has been processed and produced exactly the `outputOffset` bytes of output
 * before it, and `guest` is the guest's state right after.
 */
export interface Checkpoint {
  /** Format version of this object (1). */
  version: 1
  /** Monotonic within a stream: 1, 2, 3... (a resumed stream continues the numbering). */
  sequence: number
  /** sha256 (hex) of the module bytes as given (before any rewrite by the host). */
  moduleHash: string
  /** sha256 (hex) of the options that change output (bufferSize, delimiter, maxRecordSize). */
  optionsHash: string
  /** Input bytes fully consumed by the guest. Resume reads input from here. */
  inputOffset: number
  /** Output bytes produced for that input. Resume truncates the output to this length. */
  outputOffset: number
  /** Milliseconds since the epoch when the cut was taken. */
  timestamp: number
  /** User metadata, JSON-serialisable, stored as given. */
  metadata: Record<string, unknown>
  guest: GuestState
}

/** What `list()` returns: a checkpoint without its (large) guest state. */
export type CheckpointInfo = Omit<Checkpoint, 'guest'> & {
  /** Bytes the stored checkpoint takes (compressed state included), where the storage knows it. */
  storedBytes?: number
}

/**
 * Where checkpoints live. Implement these four methods to keep checkpoints in Redis, S3 or a
 * database; `FileCheckpointStorage` and `MemoryCheckpointStorage` are the built-in ones.
 */
export interface CheckpointStorage {
  /** Stores a checkpoint durably; when the promise resolves, `loadLatest` may return it. */
  save(checkpoint: Checkpoint): Promise<void>
  /** The newest checkpoint that is intact, or undefined. A corrupt newest one is skipped. */
  loadLatest(): Promise<Checkpoint | undefined>
  /** Intact checkpoints, oldest first, without their guest state. */
  list(): Promise<CheckpointInfo[]>
  /** Deletes all but the newest `keep` checkpoints (`keep` 0 deletes them all). */
  prune(keep: number): Promise<void>
}
