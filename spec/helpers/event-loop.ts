/**
 * How long the event loop was held up: a 1 ms timer records its largest gap (`stallMs`), and,
 * on Linux, how much CPU the main thread itself used in its busiest gap (`busyMs`, from the
 * thread's schedstat). On a busy machine a gap is mostly waiting for a core, which says nothing
 * about the code under test; `busyMs` is the part that code spent running on this thread.
 */
import { readFileSync } from 'node:fs'

/** Nanoseconds the main thread has run on a core, or NaN where Linux's schedstat is not there. */
function mainThreadCpuNs(): number {
  try {
    return Number(readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'latin1').split(' ')[0])
  } catch {
    return NaN
  }
}

export interface Stall {
  stallMs: number
  /** `undefined` where the main thread's CPU time cannot be read. */
  busyMs: number | undefined
}

/** Starts watching; `stop()` ends it and says what it saw. */
export function watchEventLoop(): { stop(): Stall } {
  let last = performance.now()
  let lastCpu = mainThreadCpuNs()
  let stallMs = 0
  let busyMs = 0
  const ticker = setInterval(() => {
    const now = performance.now()
    const cpu = mainThreadCpuNs()
    stallMs = Math.max(stallMs, now - last)
    busyMs = Math.max(busyMs, (cpu - lastCpu) / 1e6)
    last = now
    lastCpu = cpu
  }, 1)
  return {
    stop() {
      clearInterval(ticker)
      return { stallMs, busyMs: Number.isNaN(busyMs) ? undefined : busyMs }
    },
  }
}

/** Watches the event loop while `work` runs (after a settling pause, and a tick past its end). */
export async function stallDuring<T>(work: () => Promise<T>): Promise<Stall & { result: T }> {
  await new Promise((resolve) => setTimeout(resolve, 10))
  const watch = watchEventLoop()
  try {
    const result = await work()
    // A stall right at the end shows on the next tick.
    await new Promise((resolve) => setTimeout(resolve, 2))
    return { ...watch.stop(), result }
  } finally {
    watch.stop()
  }
}
