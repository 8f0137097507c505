#!/usr/bin/env node
/**
 * The `wasm-sandbox` command: `run` (the default) pipes input through a guest, `inspect` tells
 * what a module is. A thin layer on the public API; each concern is a file in cli/.
 */
import { prestartWorker } from './cli/prestart.js'

// Before the rest of the tool is even loaded (hence the dynamic imports below).
prestartWorker(process.argv.slice(2))
const { CommanderError } = await import('commander')
const { buildProgram, splitAtTerminator } = await import('./cli/program.js')
const { EXIT, report } = await import('./cli/report.js')

const HINT = "run 'wasm-sandbox --help' for the options, 'wasm-sandbox help inspect' for inspect"

async function main(argv: string[]): Promise<number> {
  let status: number = EXIT.ok
  let programArgs: string[] | undefined
  const program = buildProgram(
    () => programArgs,
    (s) => void (status = s),
  )
  for (const command of [program, ...program.commands]) {
    command.configureOutput({
      // Commander's own messages ("error: unknown option '--bogus'"), in our voice, with a way on.
      outputError: (message, write) => write(`wasm-sandbox: ${message.replace(/^error: /, '').trimEnd()}\n${HINT}\n`),
    })
  }
  if (argv.length === 0) {
    process.stderr.write(program.helpInformation())
    return EXIT.usage
  }
  const split = splitAtTerminator(argv, program.commands.find((c) => c.name() === 'run')!)
  programArgs = split.programArgs
  try {
    if (programArgs && split.ours[0] === 'inspect') {
      process.stderr.write(`wasm-sandbox: inspect takes no program arguments (after --)\n${HINT}\n`)
      return EXIT.usage
    }
    await program.parseAsync(split.ours, { from: 'user' })
    return status
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version exit 0; everything else commander refuses is a usage error.
      return err.exitCode === 0 ? EXIT.ok : EXIT.usage
    }
    return report(err)
  }
}

main(process.argv.slice(2)).then(
  (status) => {
    process.exitCode = status
  },
  (err: unknown) => {
    process.exitCode = report(err)
  },
)
