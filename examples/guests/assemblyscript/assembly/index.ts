// grepn: outputs the lines that contain PATTERN, each prefixed with its line number and ':'
// (like `grep -n`). A wasm-sandbox guest (ABI v1, docs/abi.md) in AssemblyScript: a starting
// point for a line-based filter.
//
// Run it with the `delimiter` option, so that every chunk holds whole lines:
//   wasmTransform('grepn.wasm', { delimiter: '\n' })
//   node dist/cli.js grepn.wasm --delimiter '\n' examples/demo-input.txt
// Without it a line can be cut across two chunks; the guest notices (a chunk that did not end
// with '\n' and was not the last) and fails with status 2 and a message saying so.
//
// Build (see README.md):
//   asc assembly/index.ts -O3 --runtime stub --use abort= --noAssert -o grepn.wasm
//
// `--runtime stub` never frees memory, so nothing here allocates per chunk: the output buffer
// grows to the largest chunk's output and is reused. `--use abort=` drops the env.abort import
// (the host refuses any import but sandbox.emit, sandbox.fail and env.memory); do not use
// console, trace, Date or Math.random, which import host functions too.

@external("sandbox", "emit")
declare function emit(ptr: usize, len: usize): void

@external("sandbox", "fail")
declare function fail(ptr: usize, len: usize): void

// The text to look for (UTF-8; empty matches every line). Change it and rebuild.
const PATTERN = "ERROR"

let pattern: usize = 0 // PATTERN's UTF-8 bytes, made once in init()
let patternLen: usize = 0
let line: u64 = 0 // lines seen so far
let cut = false // the last chunk ended inside a line
let input: usize = 0 // the region handed to the host
let out: usize = 0 // output buffer, reused for every chunk
let outCap: usize = 0

// Sets the error message and returns `status`: `return error(2, "...")`.
function error(status: i32, message: string): i32 {
  const bytes = String.UTF8.encode(message)
  fail(changetype<usize>(bytes), <usize>bytes.byteLength)
  return status
}

export function init(): i32 {
  const bytes = String.UTF8.encode(PATTERN)
  pattern = changetype<usize>(bytes)
  patternLen = <usize>bytes.byteLength
  return 0
}

// Called once, again only for a bigger chunk (a longer line); the old region is ours again.
export function alloc(len: usize): usize {
  if (input != 0) heap.free(input)
  input = heap.alloc(len)
  return input
}

function contains(ptr: usize, len: usize): bool {
  if (patternLen > len) return false
  const first = load<u8>(pattern)
  for (let i: usize = 0; i + patternLen <= len; i++) {
    if (load<u8>(ptr + i) == first && memory.compare(ptr + i, pattern, patternLen) == 0) return true
  }
  return false
}

// Makes room for `need` more bytes after the first `used` of the output buffer.
function reserve(used: usize, need: usize): void {
  if (used + need <= outCap) return
  let cap = outCap < 4096 ? <usize>4096 : outCap
  while (cap < used + need) cap *= 2
  out = out == 0 ? heap.alloc(cap) : heap.realloc(out, cap)
  outCap = cap
}

// Writes `n` in decimal at out + used; returns the new `used`.
function writeNumber(used: usize, n: u64): usize {
  let digits: usize = 1
  for (let m = n; m >= 10; m /= 10) digits++
  let at = used + digits
  do {
    at--
    store<u8>(out + at, <u8>(48 + n % 10))
    n /= 10
  } while (n != 0)
  return used + digits
}

export function process_chunk(ptr: usize, len: usize): i32 {
  if (cut && len > 0) {
    return error(2, "grepn: a line was cut across two chunks: run with the delimiter option ('\\n')")
  }
  let used: usize = 0
  let start: usize = 0
  while (start < len) {
    let end = start
    while (end < len && load<u8>(ptr + end) != 10) end++
    const next = end < len ? end + 1 : len // the line with its '\n'
    line++
    if (contains(ptr + start, end - start)) {
      reserve(used, 21 + next - start)
      used = writeNumber(used, line)
      store<u8>(out + used, 58) // ':'
      used++
      memory.copy(out + used, ptr + start, next - start)
      used += next - start
    }
    start = next
  }
  cut = len > 0 && load<u8>(ptr + len - 1) != 10
  if (used > 0) emit(out, used)
  return 0
}
