export { wasmTransform } from './api/wasm-transform.js'
export { createSandbox, Sandbox, StreamProcessor } from './api/sandbox.js'
export { processFile, type ProcessFileOptions, type ProcessFileResult } from './api/process-file.js'
export type { Checkpoint, CheckpointInfo, CheckpointStorage, GuestState } from './checkpoint/types.js'
export { FileCheckpointStorage } from './checkpoint/file-storage.js'
export { MemoryCheckpointStorage } from './checkpoint/memory-storage.js'
export { encodeCheckpoint, decodeCheckpoint, CorruptCheckpointError } from './checkpoint/codec.js'
export { FileSink } from './checkpoint/file-sink.js'
export { composeStages, createSandboxStream, outputOptionsHash, type SandboxStream, type StreamMetrics } from './compose.js'
export { Chunker, type ChunkerOptions } from './stages/chunker.js'
export type { ChunkingReport } from './stages/chunk-size-tuner.js'
export { BackpressureGate, type BackpressureGateOptions } from './stages/backpressure-gate.js'
export { WasmExecutor, type WasmExecutorOptions } from './stages/wasm-executor.js'
export { CheckpointTap, type CheckpointTapOptions } from './stages/checkpoint-tap.js'
export { kOffset, offsetOf } from './stages/offset.js'
export type { GuestGlobal, LoadedGuest, LoadOptions, ModuleSource } from './guest/load.js'
export { loadGuest } from './runners/guest-loader.js'
export {
  GuestInstance,
  bufferSink,
  LOG_LIMITS,
  type GuestLogEntry,
  type GuestLogLevel,
  type GuestServices,
  type InstanceLimits,
  type LogSink,
  type OutputSink,
} from './guest/instance.js'
export type { GuestAbi } from './guest/abi.js'
export { endOfInput, type ConcurrencyReport, type GuestRunner, type Job, type RunnerCallback, type RunnerFactory, type RunnerHooks, type RunnerOptions, type Snapshot } from './runners/runner.js'
export { runnerChain, type RunnerChainOptions } from './runners/chain.js'
export { RecoveringRunner, type RecoveryOptions } from './runners/recovering.js'
export { SnapshottingRunner, type SnapshotSchedule } from './runners/snapshotting.js'
export { DeadlineRunner } from './runners/deadline.js'
export { InlineRunner } from './runners/inline.js'
export { WorkerRunner } from './runners/worker.js'
export { PoolRunner } from './runners/pool.js'
export { WorkerPool, type WorkerPoolOptions } from './runners/worker-pool.js'
export {
  WasmSandboxError,
  isWasmSandboxError,
  type WasmSandboxErrorCode,
  type WasmSandboxErrorDetails,
  type WasmFrame,
} from './errors.js'
export {
  resolveOptions,
  MAX_GUEST_CONFIG,
  DEFAULT_BUFFER_SIZE,
  DEFAULT_LIMITS,
  type Isolation,
  type Limits,
  type SandboxOptions,
  type CheckpointOptions,
  type ResolvedOptions,
  type BackpressureStrategy,
  type RecoveryStrategy,
  type FlowControlOptions,
} from './options.js'
export { WasmTransformStream, wasmTransformStream } from './adapters/web-stream.js'
