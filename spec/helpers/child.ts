/** Runs a compiled spec/children script as a child process, killing it if it does not exit in time. */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export interface ChildResult {
  code: number | null
  stdout: string
  stderr: string
  timedOut: boolean
}

export function runNode(args: string[], timeoutMs: number, cwd?: string): Promise<ChildResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(cwd ? { cwd } : {}) })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d))
    child.stderr.on('data', (d: Buffer) => (stderr += d))
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, timeoutMs)
    child.on('exit', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr, timedOut })
    })
  })
}

/** Runs `spec/children/<name>.js` (compiled) with `args`. */
export function runChild(name: string, args: string[], timeoutMs: number): Promise<ChildResult> {
  return runNode([fileURLToPath(new URL(`../children/${name}.js`, import.meta.url)), ...args], timeoutMs)
}
