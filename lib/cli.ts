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
  -h, --help                this text`

function unescape(s: string): string {
  return s.replace(/\\([nrt0\\])/g, (_, c: string) => ({ n: '\n', r: '\r', t: '\t', '0': '\0', '\\': '\\' })[c]!)
}

function integer(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isInteger(n)) throw new Error(`${name} must be an integer, got ${value}`)
  return n
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      output: { type: 'string', short: 'o' },
      'buffer-size': { type: 'string', short: 'b' },
      delimiter: { type: 'string', short: 'd' },
      'max-record-size': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })
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
    process.stderr.write(`wasm-sandbox: ${isWasmSandboxError(e) ? `${e.code}: ` : ''}${e.message}\n`)
    process.exitCode = 1
  },
)
