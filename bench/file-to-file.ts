/**
 * File to file, the way users run it: the CLI with the SIMD `upper` guest on a large text file,
 * against `tr a-z A-Z` on the same file and against a plain Node stream copy of it (1 MiB and
 * 64 KiB reads). Each command runs as its own process, timed from spawn to exit, so the CLI's
 * start-up and the output file's writes count, as they do for a user. The CLI runs twice: as tr
 * is run (`< in > out`, the write-back left to the kernel), and with `-o`, which fsyncs its output
 * before renaming it over the target (on a slow disk that fsync is most of the difference). Both
 * outputs are checked against tr's. The files live on a RAM file system when there is one
 * (`benchDirectory`).
 */
import { spawnSync } from 'node:child_process'
import { closeSync, openSync, rmSync, statSync, statfsSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { median } from './harness.js'

const MiB = 1024 * 1024

export interface FileRow {
  label: string
  seconds: number
  /**
   * tr's time over this one's, the median of each rep's own ratio (the commands of a rep run
   * seconds apart, and this machine's disk and memory drift more than that between reps): 1 is
   * tr's speed, above 1 faster than tr.
   */
  speedOfTr: number
  /** The same from the medians of each command's times, for comparison. */
  speedOfTrOfMedians: number
}

export interface FileReport {
  bytes: number
  /** The directory the files were in, and what it is. */
  where: string
  rows: FileRow[]
}

/** The RAM file system Linux mounts for POSIX shared memory. */
const RAM_DIRECTORY = '/dev/shm'

/**
 * Where the files go: `WASM_SANDBOX_BENCH_DIR` if set, else a RAM file system with room for the
 * input, the outputs the last rep keeps and a temporary file (7 × the input), else the temporary directory. On a disk the row measured the disk: on
 * this VM its write-back moved the same Node copy from 0.6 to 2.1 s of system time minutes apart
 * while tr's stayed at 0.5 s, and in three full benches the CLI came out at 0.52, 3.03 and 1.94×
 * tr's time, with a plain Node copy at 2.2× in the last. In RAM both sides pay only their own
 * reads, work and writes, which is what the aim compares.
 */
function benchDirectory(bytes: number): { base: string; where: string } {
  const chosen = process.env.WASM_SANDBOX_BENCH_DIR
  if (chosen) return { base: chosen, where: `${chosen} (WASM_SANDBOX_BENCH_DIR)` }
  try {
    const fs = statfsSync(RAM_DIRECTORY)
    if (fs.bavail * fs.bsize >= 7 * bytes) return { base: RAM_DIRECTORY, where: `${RAM_DIRECTORY} (in RAM)` }
  } catch {
    // No /dev/shm here (not Linux): the temporary directory, wherever it is.
  }
  return { base: tmpdir(), where: `${tmpdir()} (the temporary directory)` }
}

/** Lines of lower- and upper-case words, so `upper` and `tr` both have work on every byte. */
function writeText(path: string, bytes: number): void {
  const line = Buffer.from('the quick brown fox jumps over the lazy dog, THEN 0123456789 more words.\n')
  const block = Buffer.alloc(MiB)
  for (let i = 0; i < MiB; i++) block[i] = line[i % line.length]!
  const fd = openSync(path, 'w')
  try {
    for (let written = 0; written < bytes; written += MiB) writeSync(fd, block, 0, Math.min(MiB, bytes - written))
  } finally {
    closeSync(fd)
  }
}

function timeCommand(command: string, args: string[]): number {
  const start = process.hrtime.bigint()
  const result = spawnSync(command, args, { stdio: ['ignore', 'ignore', 'inherit'] })
  const seconds = Number(process.hrtime.bigint() - start) / 1e9
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} exited with ${result.status ?? result.signal}`)
  return seconds
}

const nodeCopy = (readBytes: number): string =>
  `const fs=require('fs');const {pipeline}=require('stream');` +
  `pipeline(fs.createReadStream(process.argv[1],{highWaterMark:${readBytes}}),fs.createWriteStream(process.argv[2]),(e)=>{if(e)throw e})`

export function runFileToFileBench(root: string, quick: boolean): FileReport {
  const bytes = (quick ? 64 : 512) * MiB
  const reps = quick ? 1 : 3
  const { base, where } = benchDirectory(bytes)
  const dir = join(base, `wasm-sandbox-bench-${process.pid}`)
  rmSync(dir, { recursive: true, force: true })
  spawnSync('mkdir', ['-p', dir])
  const input = join(dir, 'input.txt')
  const cli = join(root, 'dist', 'cli.js')
  const upper = join(root, 'examples', 'upper.wasm')
  try {
    writeText(input, bytes)
    const commands: [string, string, string[]][] = [
      ['tr a-z A-Z', 'sh', ['-c', `tr a-z A-Z < '${input}' > '${join(dir, 'tr.txt')}'`]],
      ['node copy, 1 MiB reads', process.execPath, ['-e', nodeCopy(MiB), input, join(dir, 'copy.txt')]],
      ['node copy, 64 KiB reads', process.execPath, ['-e', nodeCopy(64 * 1024), input, join(dir, 'copy.txt')]],
      // As tr is run: stdin and stdout redirected, the kernel writing back in its own time.
      ['CLI upper < in > out (worker)', 'sh', ['-c', `'${process.execPath}' '${cli}' '${upper}' < '${input}' > '${join(dir, 'cli-redirect.txt')}'`]],
      // -o replaces the file only on success, and fsyncs it first so a crash never leaves it half written.
      ['CLI upper -o out (worker)', process.execPath, [cli, upper, input, '-o', join(dir, 'cli.txt')]],
      ['CLI upper --inline -o out', process.execPath, [cli, '--inline', upper, input, '-o', join(dir, 'cli.txt')]],
    ]
    const times = new Map<string, number[]>(commands.map(([label]) => [label, []]))
    // Interleaved, so a slow patch of the machine hits every command alike. Each output is
    // deleted before the next command but in the last rep (kept to compare): its dirty pages
    // would otherwise be written back during the commands after it, and slow them.
    for (let rep = 0; rep < reps; rep++) {
      for (const [label, command, args] of commands) {
        // Untimed: the dirty pages of the command before are written back now, not during this one.
        spawnSync('sync')
        times.get(label)!.push(timeCommand(command, args))
        if (rep < reps - 1) for (const name of ['tr.txt', 'copy.txt', 'cli.txt', 'cli-redirect.txt']) rmSync(join(dir, name), { force: true })
      }
    }
    if (statSync(join(dir, 'cli.txt')).size !== bytes) throw new Error('the CLI wrote the wrong number of bytes')
    for (const name of ['cli.txt', 'cli-redirect.txt']) {
      const same = spawnSync('cmp', [join(dir, 'tr.txt'), join(dir, name)])
      if (same.status !== 0) throw new Error(`the CLI output (${name}) differs from tr a-z A-Z`)
    }
    const trTimes = times.get('tr a-z A-Z')!
    const rows = commands.map(([label]) => {
      const own = times.get(label)!
      const seconds = median(own)
      return { label, seconds, speedOfTr: median(own.map((s, rep) => trTimes[rep]! / s)), speedOfTrOfMedians: median(trTimes) / seconds }
    })
    return { bytes, where, rows }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

export function printFileToFile(report: FileReport): void {
  console.log(
    `\nFile to file: ${report.bytes / MiB} MiB of text in ${report.where}, each command a process (median seconds; times tr's, the median of each rep's own ratio, ` +
      `the ratio of medians in brackets; aim: the CLI at 1.5× tr's time or better)`,
  )
  for (const row of report.rows) {
    console.log(
      `  ${row.label.padEnd(34)} ${row.seconds.toFixed(2).padStart(6)} s  ${(1 / row.speedOfTr).toFixed(2)}× tr's time (${(1 / row.speedOfTrOfMedians).toFixed(2)}×)`,
    )
  }
}
