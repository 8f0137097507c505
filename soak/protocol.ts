/** What a batch child (batch.ts) tells the runner (runner.ts), one JSON line per event on fd 3. */
import type { Outcome } from './run-case.js'

export type BatchEvent =
  | { t: 'start'; i: number; boundMs: number }
  | { t: 'done'; i: number; ms: number; outcome: Outcome }
  | { t: 'hang'; i: number; ms: number }
  | { t: 'leak-workers'; i: number; busy: number; atEnd: boolean }
  | { t: 'leak-handles'; i: number; extra: Record<string, number> }
  | { t: 'warning'; i: number; name: string; message: string }
  | { t: 'end' }

/** The exit status of a child that caught one of its own cases hanging. */
export const HANG_EXIT = 70
