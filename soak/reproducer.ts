/**
 * A failing case on disk, self-contained: the module's bytes, the input, and case.json (pieces,
 * pauses, reader delays, options, what went wrong). Replaying reads these files, not the
 * generator, so a reproducer stays valid when the generator changes.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { optionsFromJson, optionsToJson, type CaseSpec } from './cases.js'

export interface FailureNote {
  kind: string
  detail: string
}

export function writeReproducer(dir: string, spec: CaseSpec, failure: FailureNote, stderrTail = ''): void {
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'module.wasm'), spec.module)
  writeFileSync(join(dir, 'input.bin'), spec.input)
  const { module: _m, input: _i, options, ...rest } = spec
  const meta = { ...rest, failure, replay: `npm run soak -- --replay ${dir}`, options: JSON.parse(optionsToJson(options)) as unknown }
  writeFileSync(join(dir, 'case.json'), JSON.stringify(meta, null, 2) + '\n')
  if (stderrTail) writeFileSync(join(dir, 'child-stderr.txt'), stderrTail)
}

export function readReproducer(dir: string): CaseSpec {
  const meta = JSON.parse(readFileSync(join(dir, 'case.json'), 'utf8')) as Omit<CaseSpec, 'module' | 'input' | 'options'> & { options: unknown }
  return {
    seed: meta.seed,
    index: meta.index,
    source: meta.source,
    mutations: meta.mutations,
    pieces: meta.pieces,
    pauses: meta.pauses,
    readerDelays: meta.readerDelays,
    boundMs: meta.boundMs,
    options: optionsFromJson(JSON.stringify(meta.options)),
    module: readFileSync(join(dir, 'module.wasm')),
    input: readFileSync(join(dir, 'input.bin')),
  }
}
