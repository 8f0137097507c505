/** The part of gulp 5's API the tests use (gulp ships no types of its own). */
declare module 'gulp' {
  import type { Duplex, Readable } from 'node:stream'

  type Done = (err?: Error | null) => void
  type TaskFunction = (done: Done) => unknown

  export function src(globs: string | string[], options?: Record<string, unknown>): Readable
  export function dest(folder: string, options?: Record<string, unknown>): Duplex
  export function series(...tasks: TaskFunction[]): (done: Done) => void
  export function parallel(...tasks: TaskFunction[]): (done: Done) => void
  /** gulp reports a failed task as an 'error' event on itself (the CLI listens to it). */
  export function on(event: 'error', listener: (event: unknown) => void): unknown
}
