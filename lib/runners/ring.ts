/**
 * A single-producer, single-consumer ring of frames in a SharedArrayBuffer: how chunk bytes
 * cross the worker boundary without structured-clone copies. One side writes, the other reads;
 * `used` (in bytes, frames included) is the only word both sides change, atomically, and the
 * writer adds a frame to it only once the frame is wholly written.
 *
 * A frame is a 32-byte header of eight int32 slots followed by the payload, padded to 32 bytes
 * so that a header never straddles the end of the ring (payloads may wrap).
 */

const USED = 0
const READ_POS = 1
const WRITE_POS = 2
/** Set by a side that sleeps until the other makes progress; see `wantWake`. */
const SLEEPING = 3
/**
 * Set while a side is (about to be) blocked in `Atomics.wait` on USED: the other side notifies
 * only then. A notify with a sleeper is a futex wake-up, tens of microseconds on a loaded
 * machine; paid per frame, it was the main thread's largest cost per chunk.
 */
const WAITING = 4
/**
 * The ring's capacity, written by the side that makes it: the memory is whole 64 KiB pages, and
 * a ring larger than asked would hold more chunks than the flow control counts on.
 */
const CAPACITY = 5
const HEADER_BYTES = 32
/** How long a waiting worker polls before it sleeps. */
const SPIN_MS = 0.1
export const FRAME_HEADER = 32
const HEADER_SLOTS = FRAME_HEADER / 4

/** Header slots; their meaning beyond `length` and `kind` is up to the protocol. */
export const H_LENGTH = 0
export const H_KIND = 1
export const H_SEQ = 2
export const H_TOTAL = 3
export const H_OFFSET_LO = 4
export const H_OFFSET_HI = 5
export const H_ARG = 6

/**
 * The largest ring: positions are int32 words, and a chunk larger than a frame crosses in
 * several frames anyway, so a deeper ring only holds more bytes nobody has asked for yet.
 */
export const MAX_RING_CAPACITY = 16 * 1024 * 1024

function padded(n: number): number {
  return (n + FRAME_HEADER - 1) & ~(FRAME_HEADER - 1)
}

/** Ring capacities are multiples of two frames' padding. */
const CAPACITY_UNIT = 2 * FRAME_HEADER
const WASM_PAGE = 64 * 1024

/**
 * Bytes of shared memory for a ring of at least `capacity`, at most MAX_RING_CAPACITY. Plain
 * arithmetic: 32-bit bit operations would wrap.
 */
export function ringBytesFor(capacity: number): number {
  return HEADER_BYTES + Math.ceil(Math.min(Math.max(capacity, CAPACITY_UNIT), MAX_RING_CAPACITY) / CAPACITY_UNIT) * CAPACITY_UNIT
}

/**
 * A ring's shared memory: a shared WebAssembly.Memory's buffer, not a `new SharedArrayBuffer`.
 * Node allocates those with calloc: once a few rings (2 MiB each by default) had been freed,
 * glibc served the next from its heap, cleared every page, and kept the pages when they were
 * freed, so a server's RSS grew by 4 MiB a worker that ever ran (100 connections: +360 MiB a
 * wave, past 1.3 GiB after five, `spec/socket.test.ts`) whatever the streams wrote. A wasm
 * memory is mapped: only pages written count, and it is unmapped when collected. 200 rings of
 * 2 MiB, 40 KiB written in each, six times over: 444 MiB of RSS left as SharedArrayBuffers, 43 as
 * wasm memories. The price is address space: V8 reserves 10 GiB of it (none resident) for each
 * wasm memory, as for the guest's own, so a worker takes 30 GiB instead of 10, and a process
 * runs out past about 4,000 live workers instead of 13,000 (x86-64: 128 TiB).
 */
function ringMemory(bytes: number): SharedArrayBuffer {
  const pages = Math.ceil(bytes / WASM_PAGE)
  return new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true }).buffer as unknown as SharedArrayBuffer
}

export class FrameRing {
  readonly sab: SharedArrayBuffer
  readonly capacity: number
  private readonly state: Int32Array
  private readonly data: Uint8Array
  private readonly words: Int32Array
  /** The header of the frame last peeked, reused so reading allocates nothing. */
  readonly header = new Int32Array(HEADER_SLOTS)
  /**
   * The writer wakes a blocked reader only once the ring is half full or on `wakeReader`: the
   * main thread sets this, and calls `wakeReader` before it goes idle, so a worker that slept is
   * woken once per several frames rather than per frame.
   */
  lazyWake = false
  private wakeOwed = false

  constructor(sabOrCapacity: SharedArrayBuffer | number) {
    const bytes = typeof sabOrCapacity === 'number' ? ringBytesFor(sabOrCapacity) : 0
    this.sab = typeof sabOrCapacity === 'number' ? ringMemory(bytes) : sabOrCapacity
    this.state = new Int32Array(this.sab, 0, HEADER_BYTES / 4)
    if (bytes > 0) Atomics.store(this.state, CAPACITY, bytes - HEADER_BYTES)
    this.capacity = Atomics.load(this.state, CAPACITY)
    this.data = new Uint8Array(this.sab, HEADER_BYTES, this.capacity)
    this.words = new Int32Array(this.sab, HEADER_BYTES, this.capacity / 4)
  }

  /** The largest payload one frame can carry (half the ring, so two frames always fit). */
  get maxPayload(): number {
    return this.capacity / 2 - FRAME_HEADER
  }

  used(): number {
    return Atomics.load(this.state, USED)
  }

  /** Free bytes for a frame with a payload of `payload` bytes? */
  fits(payload: number): boolean {
    return this.capacity - Atomics.load(this.state, USED) >= FRAME_HEADER + padded(payload)
  }

  /**
   * Writes one frame: the header slots given, then `length` bytes of `source` from `start`.
   * The caller checked `fits` first. Wakes a reader blocked in `Atomics.wait`.
   */
  write(
    kind: number,
    seq: number,
    total: number,
    offset: number,
    arg: number,
    source: Uint8Array | undefined,
    start: number,
    length: number,
  ): void {
    let pos = Atomics.load(this.state, WRITE_POS)
    const w = pos >> 2
    const words = this.words
    words[w + H_LENGTH] = length
    words[w + H_KIND] = kind
    words[w + H_SEQ] = seq
    words[w + H_TOTAL] = total
    words[w + H_OFFSET_LO] = offset % 0x100000000
    words[w + H_OFFSET_HI] = Math.floor(offset / 0x100000000)
    words[w + H_ARG] = arg
    pos += FRAME_HEADER
    if (pos === this.capacity) pos = 0
    if (length > 0) {
      const first = Math.min(length, this.capacity - pos)
      this.data.set(source!.subarray(start, start + first), pos)
      if (first < length) this.data.set(source!.subarray(start + first, start + length), 0)
    }
    const size = FRAME_HEADER + padded(length)
    Atomics.store(this.state, WRITE_POS, (Atomics.load(this.state, WRITE_POS) + size) % this.capacity)
    const used = Atomics.add(this.state, USED, size) + size
    if (this.lazyWake && used * 2 < this.capacity) this.wakeOwed = true
    else this.notifyWaiter()
  }

  /** Wakes a reader still asleep after frames written with `lazyWake`. */
  wakeReader(): void {
    if (this.wakeOwed) this.notifyWaiter()
  }

  /** Reads the next frame's header into `this.header`; false when the ring is empty. */
  peek(): boolean {
    if (Atomics.load(this.state, USED) === 0) return false
    const w = Atomics.load(this.state, READ_POS) >> 2
    for (let i = 0; i < HEADER_SLOTS; i++) this.header[i] = this.words[w + i]!
    return true
  }

  offsetOfFrame(): number {
    return (this.header[H_OFFSET_HI]! >>> 0) * 0x100000000 + (this.header[H_OFFSET_LO]! >>> 0)
  }

  /** Copies the peeked frame's payload (or `length` bytes of it from `from`) into `target` at `at`. */
  copyPayload(target: Uint8Array, at: number, from = 0, length = this.header[H_LENGTH]! - from): void {
    if (length === 0) return
    let pos = Atomics.load(this.state, READ_POS) + FRAME_HEADER + from
    if (pos >= this.capacity) pos -= this.capacity
    const first = Math.min(length, this.capacity - pos)
    target.set(this.data.subarray(pos, pos + first), at)
    if (first < length) target.set(this.data.subarray(0, length - first), at + first)
  }

  /** Releases the peeked frame and wakes a writer blocked waiting for space. */
  consume(): void {
    const size = FRAME_HEADER + padded(this.header[H_LENGTH]!)
    Atomics.store(this.state, READ_POS, (Atomics.load(this.state, READ_POS) + size) % this.capacity)
    Atomics.sub(this.state, USED, size)
    this.notifyWaiter()
  }

  /**
   * After USED changed. Both are sequentially consistent, as are the waiter's store of WAITING and
   * its re-check of USED (in `Atomics.wait`): a waiter this misses sees the new USED and does not sleep.
   */
  private notifyWaiter(): void {
    this.wakeOwed = false
    if (Atomics.load(this.state, WAITING) !== 0) Atomics.notify(this.state, USED)
  }

  /**
   * Blocks (worker side only) while `used` still equals `seen`, up to `timeoutMs`. It polls
   * briefly first: waking a sleeping thread costs tens of microseconds, more than a chunk's work
   * for a fast guest, and the other side usually answers within that time.
   */
  waitWhileUsed(seen: number, timeoutMs: number): void {
    const deadline = performance.now() + SPIN_MS
    do {
      if (Atomics.load(this.state, USED) !== seen) return
    } while (performance.now() < deadline)
    Atomics.store(this.state, WAITING, 1)
    Atomics.wait(this.state, USED, seen, timeoutMs)
    Atomics.store(this.state, WAITING, 0)
  }

  /** The sleeping side announces itself; the other side asks `wantWake` after progress. */
  sleep(): void {
    Atomics.store(this.state, SLEEPING, 1)
  }

  awake(): void {
    Atomics.store(this.state, SLEEPING, 0)
  }

  /** True once per sleep: the caller should send a wake-up message. */
  wantWake(): boolean {
    return Atomics.compareExchange(this.state, SLEEPING, 1, 0) === 1
  }

  /**
   * Empties the ring for a new session in the same thread. Only while neither side uses it:
   * a reused worker is waiting for its next session message.
   */
  reset(): void {
    for (let i = 0; i < this.state.length; i++) if (i !== CAPACITY) Atomics.store(this.state, i, 0)
    this.wakeOwed = false
  }

  /** Wakes any thread blocked on this ring, e.g. before terminating it. */
  wakeAll(): void {
    Atomics.notify(this.state, USED)
  }
}
