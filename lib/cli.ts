#!/usr/bin/env node
import { createReadStream, createWriteStream } from 'node:fs'
import { pipeline } from 'node:stream/promises'
import { parseArgs } from 'node:util'
import { wasmTransform } from './api/wasm-transform.js'
import { isWasmSandboxError } from './errors.js'
import type { SandboxOptions } from './options.js'

const USAGE = `Usage: wasm-sandbox <module.wasm> [input] [-o output] [options]

Pipes input (a file, or standard input) through the guest module to output (a file, or
standard output).

Options:
  -o, --output <file>       write here instead of standard output
  -b, --buffer-size <n>     chunk size in bytes (default 65536)
  -d, --delimiter <s>       cut only after this delimiter, e.g. '\\n' (escapes \\n \\r \\t \\0 allowed)
      --max-record-size <n> longest record with --delimiter
      --inline              run the guest on the main thread (trusted guests only: no time limit)
      --timeout <ms>        time limit per guest call (default 5000; worker isolation)
      --memory <bytes>      guest memory limit (default 268435456)
      --max-output <bytes>  total output limit (default unlimited)
  -h, --help                this text

Exit status: 0 on success, 1 on a guest or I/O error (the error code is printed), 2 on usage errors.`

function unescape(s: string): string {
  return s.replace(/\\([nrt0\\])/g, (_, c: string) => ({ n: '\n', r: '\r', t: '\t', '0': '\0', '\\': '\\' })[c]!)
}

function integer(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isInteger(n)) throw new Error(`${name} must be an integer, got ${value}`)
  return n
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      output: { type: 'string', short: 'o' },
      'buffer-size': { type: 'string', short: 'b' },
      delimiter: { type: 'string', short: 'd' },
      'max-record-size': { type: 'string' },
      inline: { type: 'boolean' },
      timeout: { type: 'string' },
      memory: { type: 'string' },
      'max-output': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })
}

async function main(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parse>
  try {
    parsed = parse(argv)
  } catch (err) {
    process.stderr.write(`wasm-sandbox: ${(err as Error).message}\n\n${USAGE}\n`)
    return 2
  }
  const { values, positionals } = parsed
  if (values.help || positionals.length < 1 || positionals.length > 2) {
    process.stderr.write(USAGE + '\n')
    return values.help ? 0 : 2
  }
  const [module, input] = positionals as [string, string | undefined]
  const options: SandboxOptions = {}
  const bufferSize = integer('--buffer-size', values['buffer-size'])
  if (bufferSize !== undefined) options.bufferSize = bufferSize
  const maxRecordSize = integer('--max-record-size', values['max-record-size'])
  if (maxRecordSize !== undefined) options.maxRecordSize = maxRecordSize
  if (values.delimiter !== undefined) options.delimiter = unescape(values.delimiter)
  if (values.inline) options.isolation = 'inline'
  const limits: NonNullable<SandboxOptions['limits']> = {}
  const timeout = integer('--timeout', values.timeout)
  if (timeout !== undefined) limits.timeout = timeout
  const memory = integer('--memory', values.memory)
  if (memory !== undefined) limits.memory = memory
  const maxOutput = integer('--max-output', values['max-output'])
  if (maxOutput !== undefined) limits.maxOutput = maxOutput
  options.limits = limits

  const source = input === undefined || input === '-' ? process.stdin : createReadStream(input)
  const sink = values.output === undefined ? process.stdout : createWriteStream(values.output)
  await pipeline(source, wasmTransform(module, options), sink)
  return 0
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (err: unknown) => {
    const e = err as Error & { code?: string }
    // A reader that closed early (| head) is not a failure of ours.
    if (e.code === 'EPIPE') return
    process.stderr.write(`wasm-sandbox: ${isWasmSandboxError(e) ? `${e.code}: ` : ''}${e.message}\n`)
    process.exitCode = 1
  },
)
