import type { EventEmitter } from 'node:events'

/**
 * Emits an event whose listeners are user code. A listener that throws fails the stream with
 * its own error instead of escaping into a stream callback (an uncaught exception) or a promise
 * (an unhandled rejection) and leaving the stream hung.
 */
export function emitSafely(stream: EventEmitter & { destroy(err: Error): unknown }, event: string, ...args: unknown[]): boolean {
  try {
    return stream.emit(event, ...args)
  } catch (err) {
    stream.destroy(err instanceof Error ? err : new Error(String(err)))
    return false
  }
}
