import { errors } from '../errors.js'
import type { CheckpointStorage } from './types.js'

/**
 * Calls one of a storage's methods (user code, or the file system under the built-in one) so
 * that a failure, whether thrown synchronously or rejected, reaches the caller as
 * ERR_WASM_CHECKPOINT_FAILED with the original as `cause`, and `next` telling what to do.
 */
export async function callStorage<T>(
  storage: CheckpointStorage,
  operation: 'loadLatest' | 'list' | 'prune',
  next: string,
  call: () => Promise<T>,
): Promise<T> {
  try {
    return await call()
  } catch (err) {
    throw errors.checkpointStorageFailed(storage, operation, err, next)
  }
}
