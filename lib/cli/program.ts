import { readFileSync } from 'node:fs'
import { Command, Option } from 'commander'
import { inspect, type InspectFlags } from './inspect.js'
import { collect, type RunFlags } from './options.js'
import { run } from './run.js'

const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }

const EXIT_STATUS = `
Exit status:
  0    success (inspect: the module would be accepted)
  1    the run failed: a guest error, a limit, an I/O error, the error code printed
       (inspect: the module would be refused, and why is printed)
  2    a usage error: an unknown option, a bad value, a missing or extra argument, -o
       naming the input or the module; one line says what to change
  N    a WASI program's own non-zero exit status, passed on
  A signal (Ctrl-C) ends the run as it would any program, leaving -o untouched.
`

const RUN_EXAMPLES = `
Examples:
  $ wasm-sandbox examples/upper.wasm examples/demo-input.txt -o out.txt
  $ wasm-sandbox examples/grep.wasm -d '\\n' --recovery skip < examples/demo-input.txt
  $ wasm-sandbox examples/wasi/head.wasm examples/demo-input.txt -- 3
  $ wasm-sandbox big.wasm big.log -o big.out --checkpoint-dir .ckpt   # again after a crash: resumes
  $ wasm-sandbox inspect examples/wc.wasm`

/** Where the program's arguments start: past the first `--` that is not an option's value. */
export function splitAtTerminator(argv: string[], command: Command): { ours: string[]; programArgs: string[] | undefined } {
  const takesValue = new Set<string>()
  for (const option of command.options) {
    if (option.required || option.optional) {
      if (option.long) takesValue.add(option.long)
      if (option.short) takesValue.add(option.short)
    }
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg === '--') return { ours: argv.slice(0, i), programArgs: argv.slice(i + 1) }
    // '--buffer-size 1024' and '-b 1024' take the next word; '--buffer-size=1024' and '-b1024' do not.
    if (takesValue.has(arg)) i++
  }
  return { ours: argv, programArgs: undefined }
}

function runCommand(programArgs: () => string[] | undefined, exit: (status: number) => void): Command {
  const group = (heading: string, options: Option[]): Option[] => options.map((o) => o.helpGroup(heading))
  const command = new Command('run')
    .summary('pipe input through a guest (the default command)')
    .description(
      'Pipes input (a file, or standard input) through the guest module to output (a file, or standard ' +
        'output). A WASI program is run as it is: its stdin is the input, its stdout the output, its ' +
        'stderr goes to standard error, and what follows -- is its argv (after its name).',
    )
    .argument('<module>', 'the guest: a .wasm file (ABI v1 guest, or WASI command or reactor)')
    .argument('[input]', "the input file (default, or '-': standard input)")
  const options = [
    ...group('Output:', [
      new Option('-o, --output <file>', "write here instead of standard output ('-': standard output); an existing file is replaced only once the run has succeeded, and may not be the input or the module"),
      new Option('-q, --quiet', 'no progress line (it is drawn only when standard error is a terminal and the output is not)'),
      new Option('--stats', "print the stream's metrics() as one line of JSON on standard error at the end"),
    ]),
    ...group('Chunking:', [
      new Option('-b, --buffer-size <bytes|auto>', "chunk size (default 65536; 'auto': tuned from 16 KiB to 1 MiB while it runs)"),
      new Option('-d, --delimiter <s>', "cut only after this delimiter, e.g. '\\n' (escapes \\n \\r \\t \\0 \\\\)"),
      new Option('--max-record-size <bytes>', 'longest record with --delimiter (default max(16 x buffer size, 1 MiB))'),
      new Option('--max-latency <ms>', 'hand held input to the guest after this long (default 10 for standard input; a file waits for full chunks)'),
      new Option('--high-water-mark <bytes>', 'bytes each stage buffers before it applies backpressure (default: the buffer size, at least 256 KiB)'),
    ]),
    ...group('Limits:', [
      new Option('--timeout <ms>', 'time limit per guest call (default 5000; not with --inline)'),
      new Option('--deadline <ms>', 'time limit for the whole run (default none)'),
      new Option('--memory <bytes>', 'guest memory limit (default 268435456)'),
      new Option('--max-output <bytes>', 'total output limit (default unlimited)'),
      new Option('--max-output-per-chunk <bytes>', 'output limit per chunk (default 16 x buffer size + 1 MiB)'),
      new Option('--max-module-size <bytes>', 'largest module accepted, checked before it is read (default 134217728, 128 MiB)'),
      new Option('--load-timeout <ms>', 'time limit for loading a module over 1 MiB, in its own thread (default 30000)'),
    ]),
    ...group('Failure and concurrency:', [
      new Option('--recovery <how>', 'when the guest fails on a chunk: fail (default), skip the chunk, or retry=N times'),
      new Option('--stateless', 'the guest keeps nothing between chunks: recovery restarts it from init, --max-concurrency may pool it (default: as the module declares; see inspect)'),
      new Option('--no-stateless', 'treat the guest as keeping state, whatever it declares'),
      new Option('--max-concurrency <n|auto>', "instances of a stateless guest run at once, each in its own worker, output in input order (default 1; 'auto': doubled while it pays, up to two per core)"),
      new Option('--max-in-flight <n>', 'chunks queued to each instance, so reading and the guest overlap (default: 2 MiB of chunks, 2 to 64; at most 8 with a pool)'),
      new Option('--backpressure <how>', 'when the output is slower than the input: block (default), or drop, sample or adaptive to shed whole chunks (live input)'),
      new Option('--sample-rate <n>', 'with --backpressure sample: pass one chunk in n under pressure (default 10)'),
      new Option('--max-delay <ms>', 'with --backpressure adaptive: the longest delay (default 50)'),
      new Option('--inline', 'run the guest on the main thread (trusted guests only: no time limit)'),
    ]),
    ...group('Guest configuration and logs (ABI v1.1):', [
      new Option('--config <text>', 'bytes the guest reads with sandbox.config_read, e.g. a pattern (at most 1 MiB)'),
      new Option('--config-file <file>', 'the same, from a file'),
      new Option('--log <level>', "guest log messages shown on standard error: none, error, warn (default), info or debug"),
    ]),
    ...group('Checkpoints (input and -o must be files):', [
      new Option('--checkpoint-dir <dir>', 'save checkpoints here as the run goes; the same command run again resumes from the newest'),
      new Option('--checkpoint-interval <ms>', 'time between checkpoints (default 5000)'),
      new Option('--checkpoint-every <bytes>', 'also checkpoint after this much input'),
      new Option('--checkpoint-keep <n>', 'checkpoints kept (default 3)'),
    ]),
    ...group('WASI programs (nothing is granted unless named):', [
      new Option('--env <NAME=value>', 'an environment variable (repeatable)').argParser(collect),
      new Option('--dir <host[::guest]>', 'a host directory the program may read, at the guest path (default: the same absolute path); a bounded copy (repeatable)')
        .argParser(collect),
      new Option('--dir-rw <host[::guest]>', 'the same, writable (changes stay in the copy)').argParser(collect),
      new Option('--per-record', 'one fresh run per record (with --delimiter) or chunk'),
    ]),
  ]
  for (const option of options) command.addOption(option)
  command.usage('[options] <module> [input] [-- program arguments]')
  command.addHelpText('after', RUN_EXAMPLES + '\n' + EXIT_STATUS)
  command.action(async (module: string, input: string | undefined, flags: RunFlags) => {
    exit(await run({ module, input, flags, programArgs: programArgs() }))
  })
  return command
}

function inspectCommand(exit: (status: number) => void): Command {
  return new Command('inspect')
    .summary('tell what a module is and whether it would run')
    .description(
      'Reads a module and says what it is (ABI v1 guest, WASI command or reactor), its imports and ' +
        'exports, its memory and the cap it would get, whether it is stateless, and why it would be ' +
        'refused. Telling statelessness runs the guest on a small probe input, in the sandbox ' +
        '(worker, time and memory limits); --no-probe only reads it.',
    )
    .argument('<module>', 'the .wasm file')
    .option('--json', 'print the report as JSON')
    .option('--no-probe', 'do not run the guest (stateless is then unknown)')
    .option('--memory <bytes>', 'the memory limit to check against (default 268435456)')
    .option('--timeout <ms>', 'time limit per guest call while probing (default 5000)')
    .addHelpText('after', EXIT_STATUS)
    .action(async (module: string, flags: InspectFlags) => {
      exit(await inspect(module, flags))
    })
}

/**
 * The command line: `run` (the default) and `inspect`. `exit` receives the status of a command
 * that ran; a usage error or `--help` reaches the caller as a thrown `CommanderError`.
 */
export function buildProgram(programArgs: () => string[] | undefined, exit: (status: number) => void): Command {
  const program = new Command('wasm-sandbox')
    .description('Pipe byte streams through untrusted WebAssembly modules, with limits and typed errors.')
    .version(version, '-V, --version', 'print the version')
    .helpOption('-h, --help', 'print help (for a command: wasm-sandbox help run)')
    .usage('[run] [options] <module> [input] [-- program arguments]\n       wasm-sandbox inspect [options] <module>')
    .exitOverride()
    .showSuggestionAfterError(true)
  const run = runCommand(programArgs, exit)
  // run is what most people type, so its options are part of the help they see first.
  program.addHelpText('after', () => {
    const help = run.helpInformation()
    return `\nThe run command (the default):\n${help.slice(help.indexOf('Arguments:'))}${RUN_EXAMPLES}\n${EXIT_STATUS}`
  })
  program.addCommand(run, { isDefault: true })
  program.addCommand(inspectCommand(exit))
  for (const command of program.commands) {
    command.exitOverride().showSuggestionAfterError(true)
  }
  return program
}

