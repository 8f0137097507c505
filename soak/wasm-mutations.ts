/**
 * Ways to damage a wasm module: byte-level (bit flips, insertions, deletions, truncation) and
 * section-level (a section from another module spliced in, sections swapped, duplicated, dropped,
 * a section's size field changed). Byte noise mostly dies in validation; section moves keep each
 * section well-formed, so they reach the linker, the ABI checks and the guest's own code.
 */
import { encodeU32 } from '../lib/guest/binary.js'
import type { Rng } from './random.js'

export interface Section {
  id: number
  /** The whole section: id byte, size LEB, payload. */
  bytes: Buffer
}

const HEADER = 8

/** The sections of `module`, as far as they parse; what follows a malformed one is dropped. */
export function sectionsOf(module: Buffer): Section[] {
  const sections: Section[] = []
  let at = HEADER
  while (at < module.length) {
    const start = at
    const id = module[at++]!
    let size = 0
    let shift = 0
    let byte: number
    do {
      if (at >= module.length || shift > 28) return sections
      byte = module[at++]!
      size += (byte & 0x7f) * 2 ** shift
      shift += 7
    } while (byte & 0x80)
    if (at + size > module.length) return sections
    at += size
    sections.push({ id, bytes: module.subarray(start, at) })
  }
  return sections
}

function assemble(header: Buffer, sections: Section[]): Buffer {
  return Buffer.concat([header, ...sections.map((s) => s.bytes)])
}

function uleb(n: number): Buffer {
  return Buffer.from(encodeU32(n))
}

/** One mutation: the damaged bytes and a line saying what was done (kept in the reproducer). */
type Mutation = (rng: Rng, module: Buffer, donors: readonly Buffer[]) => { bytes: Buffer; step: string }

const flipBits: Mutation = (rng, module) => {
  const bytes = Buffer.from(module)
  const n = rng.int(1, 4)
  const at: string[] = []
  for (let i = 0; i < n; i++) {
    // Mostly past the header: a broken magic number only ever tests one error path.
    const pos = rng.chance(0.03) ? rng.int(0, HEADER - 1) : rng.int(Math.min(HEADER, bytes.length - 1), bytes.length - 1)
    const bit = rng.int(0, 7)
    bytes[pos]! ^= 1 << bit
    at.push(`${pos}:${bit}`)
  }
  return { bytes, step: `flip bits ${at.join(' ')}` }
}

const setBytes: Mutation = (rng, module) => {
  const bytes = Buffer.from(module)
  const n = rng.int(1, 3)
  const at: string[] = []
  for (let i = 0; i < n; i++) {
    const pos = rng.int(HEADER, bytes.length - 1)
    // Values that mean something to a parser: ends, LEB continuations, opcodes for loops and branches.
    const value = rng.chance(0.5) ? rng.pick([0x00, 0x01, 0x7f, 0x80, 0xff, 0x0b, 0x03, 0x0c, 0x0d, 0x40, 0x41]) : rng.int(0, 255)
    bytes[pos] = value
    at.push(`${pos}=${value}`)
  }
  return { bytes, step: `set bytes ${at.join(' ')}` }
}

const insertBytes: Mutation = (rng, module) => {
  const pos = rng.int(HEADER, module.length)
  const extra = rng.bytes(rng.int(1, 8))
  return { bytes: Buffer.concat([module.subarray(0, pos), extra, module.subarray(pos)]), step: `insert ${extra.toString('hex')} at ${pos}` }
}

const deleteBytes: Mutation = (rng, module) => {
  const pos = rng.int(HEADER, module.length - 1)
  const n = Math.min(rng.int(1, 8), module.length - pos)
  return { bytes: Buffer.concat([module.subarray(0, pos), module.subarray(pos + n)]), step: `delete ${n} at ${pos}` }
}

const truncate: Mutation = (rng, module) => {
  const length = rng.chance(0.1) ? rng.int(0, HEADER) : rng.int(HEADER, module.length - 1)
  return { bytes: Buffer.from(module.subarray(0, length)), step: `truncate to ${length}` }
}

const spliceSection: Mutation = (rng, module, donors) => {
  const own = sectionsOf(module)
  const donor = sectionsOf(rng.pick(donors))
  if (own.length === 0 || donor.length === 0) return flipBits(rng, module, donors)
  const incoming = rng.pick(donor)
  const same = own.findIndex((s) => s.id === incoming.id)
  if (same >= 0 && rng.chance(0.7)) {
    own[same] = incoming
    return { bytes: assemble(module.subarray(0, HEADER), own), step: `replace section ${incoming.id} with a donor's` }
  }
  const pos = rng.int(0, own.length)
  own.splice(pos, 0, incoming)
  return { bytes: assemble(module.subarray(0, HEADER), own), step: `insert a donor's section ${incoming.id} at ${pos}` }
}

const reorderSections: Mutation = (rng, module, donors) => {
  const own = sectionsOf(module)
  if (own.length < 2) return insertBytes(rng, module, donors)
  const i = rng.int(0, own.length - 1)
  const kind = rng.int(0, 2)
  if (kind === 0) {
    let j = rng.int(0, own.length - 2)
    if (j >= i) j++
    ;[own[i], own[j]] = [own[j]!, own[i]!]
    return { bytes: assemble(module.subarray(0, HEADER), own), step: `swap sections ${i} and ${j}` }
  }
  if (kind === 1) {
    own.splice(rng.int(0, own.length), 0, own[i]!)
    return { bytes: assemble(module.subarray(0, HEADER), own), step: `duplicate section ${i}` }
  }
  own.splice(i, 1)
  return { bytes: assemble(module.subarray(0, HEADER), own), step: `drop section ${i}` }
}

const resizeSection: Mutation = (rng, module, donors) => {
  const own = sectionsOf(module)
  if (own.length === 0) return truncate(rng, module, donors)
  const i = rng.int(0, own.length - 1)
  const s = own[i]!
  let sizeLength = 1
  while (s.bytes[sizeLength]! & 0x80) sizeLength++
  const payload = s.bytes.subarray(1 + sizeLength)
  const size = Math.max(0, payload.length + rng.pick([-2, -1, 1, 2, 64, 0x10000]))
  own[i] = { id: s.id, bytes: Buffer.concat([Buffer.of(s.id), uleb(size), payload]) }
  return { bytes: assemble(module.subarray(0, HEADER), own), step: `section ${i} size field ${payload.length} -> ${size}` }
}

const MUTATIONS: ReadonlyArray<readonly [number, Mutation]> = [
  [4, flipBits],
  [3, setBytes],
  [2, insertBytes],
  [2, deleteBytes],
  [1, truncate],
  [3, spliceSection],
  [2, reorderSections],
  [1, resizeSection],
]

/** One to three mutations of `module`, and what they were. */
export function mutate(rng: Rng, module: Buffer, donors: readonly Buffer[]): { bytes: Buffer; steps: string[] } {
  let bytes = module
  const steps: string[] = []
  const n = rng.weighted([[6, 1], [3, 2], [1, 3]] as const)
  for (let i = 0; i < n && bytes.length > HEADER; i++) {
    const done = rng.weighted(MUTATIONS)(rng, bytes, donors)
    bytes = done.bytes
    steps.push(done.step)
  }
  return { bytes, steps }
}
