/**
 * Runs the built command-line tool (dist/cli.js) as a child process, as a user would, and makes
 * scratch directories for it.
 */
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { repoRoot } from './reference.js'

export const cli = join(repoRoot, 'dist', 'cli.js')

export interface CliResult {
  status: number | null
  stdout: Buffer
  stderr: string
}

/** `node dist/cli.js ...args`, with `input` on standard input (empty when not given). */
export function wasmSandbox(args: string[], options: { input?: Buffer; cwd?: string; timeout?: number } = {}): CliResult {
  const result: SpawnSyncReturns<Buffer> = spawnSync(process.execPath, [cli, ...args], {
    input: options.input ?? Buffer.alloc(0),
    cwd: options.cwd,
    encoding: 'buffer',
    timeout: options.timeout ?? 30_000,
  })
  if (result.error) throw result.error
  return { status: result.status, stdout: result.stdout, stderr: result.stderr.toString() }
}

/** The same, asynchronously, for tests that act while it runs. */
export function spawnWasmSandbox(args: string[]) {
  return spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
}

/** A fresh temporary directory, and a function removing every one made. */
export function scratch(): { dir(prefix?: string): string; cleanup(): void } {
  const dirs: string[] = []
  return {
    dir(prefix = 'cli-') {
      const dir = mkdtempSync(join(tmpdir(), `wasm-sandbox-${prefix}`))
      dirs.push(dir)
      return dir
    },
    cleanup() {
      for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
    },
  }
}

/** Single-quoted for sh, for a command line handed to `script -c`. */
export function shellQuote(arg: string): string {
  return `'${arg.replace(/'/g, `'\\''`)}'`
}
