import type { WasiConfig } from './options.js'

/** A granted directory, by the path the program sees it at. */
interface Grant {
  readonly root: string
  readonly writable: boolean
}

/**
 * A file or directory as @wasmer/wasi reaches it: the path the program sees, and where `..` goes
 * from it. wasmer's inodes keep the directory they were first reached from as their parent, and
 * that is not always the one above: its `/` (fd 3) is virtual, listing only the grants by name,
 * and `..` from a grant's own directory leads there (from `/a/b`, to `/`, not `/a`); an absolute
 * path from a directory reaches the real `/` as a child of that directory, so `..` above that `/`
 * goes back to the directory. Following wasmer's parents, not the path's text, is what tells
 * which file a path really names.
 */
export interface Place {
  readonly path: string
  readonly up: Place | undefined
}

/** wasmer's virtual `/`, the only place without a parent (`..` stays there). */
const ROOT: Place = { path: '/', up: undefined }

/**
 * What a program may change in its copy of the granted directories: only what lies inside a
 * writable grant. Every descriptor is mapped to the place it was opened at (the preopened ones
 * by wasmer's layout, the rest as `path_open` returns them), for as long as it is open. A rename
 * leaves those places as they were: it is allowed only inside writable grants, and for a
 * directory only within its directory, so an old path is judged as the new one would be.
 */
export class Grants {
  readonly anyWritable: boolean
  private readonly grants: Grant[]
  private readonly preopened: Place[]
  private readonly fds = new Map<number, Place>()

  constructor(preopens: WasiConfig['preopens']) {
    this.grants = preopens.map((p) => ({ root: normalise(p.guestPath), writable: p.writable }))
    this.anyWritable = this.grants.some((g) => g.writable)
    this.preopened = this.grants.map((g) => ({ path: g.root, up: ROOT }))
    // wasmer's preopens: its `/` at fd 3, then the grants in order (spec/wasi.test.ts checks).
    if (this.grants.length > 0) this.fds.set(3, ROOT)
    this.preopened.forEach((place, i) => this.fds.set(4 + i, place))
  }

  /** Where `path` leads from descriptor `fd`; undefined where wasmer would find nothing. */
  resolve(fd: number, path: string): Place | undefined {
    return this.walk(fd, path)?.at
  }

  /**
   * The entry `path` names, for a call that adds, removes or renames one: wasmer looks the last
   * name up in the directory before it, so a last `..` would be taken as a name, not followed.
   */
  entry(fd: number, path: string): Place | undefined {
    return names(path).at(-1) === '..' ? undefined : this.resolve(fd, path)
  }

  /**
   * Whether `path_create_directory` may make `path`: wasmer makes every missing directory on
   * the way, as `mkdir -p` does, so each one the walk names must be writable, or be one that
   * cannot be missing (a granted directory or one above it).
   */
  mayCreateDirectory(fd: number, path: string): boolean {
    const walk = this.walk(fd, path)
    return walk !== undefined && this.writable(walk.at) && walk.named.every((p) => this.holdsGrant(p.path) || this.writable(p))
  }

  /**
   * Whether the program may change `place`: it lies inside a writable grant, is not the granted
   * directory itself (that is an entry of the directory above), does not hold another granted
   * directory (moving or removing it would take that grant along), and no read-only grant inside
   * the writable one holds it.
   */
  writable(place: Place | undefined): place is Place {
    if (!place || this.holdsGrant(place.path)) return false
    // The innermost grant holding it decides; of two grants of one directory, the read-only one.
    let inner: Grant | undefined
    for (const g of this.grants) {
      if (!within(place.path, g.root)) continue
      if (!inner || g.root.length > inner.root.length || (g.root.length === inner.root.length && !g.writable)) inner = g
    }
    return inner?.writable === true
  }

  /** Whether writes through descriptor `fd` may change a file. */
  writableFd(fd: number): boolean {
    return this.writable(this.fds.get(fd))
  }

  /** Whether `fd` was opened on the file system (preopened or by `path_open`). */
  has(fd: number): boolean {
    return this.fds.has(fd)
  }

  opened(fd: number, place: Place | undefined): void {
    if (place) this.fds.set(fd, place)
    else this.fds.delete(fd)
  }

  closed(fd: number): void {
    this.fds.delete(fd)
  }

  renumbered(from: number, to: number): void {
    if (from === to) return
    this.opened(to, this.fds.get(from))
    this.fds.delete(from)
  }

  /** Whether `path` holds a granted directory, or is one: it cannot be missing, moved or removed. */
  private holdsGrant(path: string): boolean {
    return this.grants.some((g) => within(g.root, path))
  }

  /** Where `path` leads from `fd`, and each place on the way that a name (not `.` or `..`) led to. */
  private walk(fd: number, path: string): { at: Place; named: Place[] } | undefined {
    let at = this.fds.get(fd)
    if (!at) return undefined
    const named: Place[] = []
    if (path.startsWith('/')) {
      // wasmer's `/` refuses absolute paths (ENOTCAPABLE).
      if (at === ROOT) return undefined
      at = { path: '/', up: at }
    }
    for (const name of names(path)) {
      if (name === '..') at = at.up ?? ROOT
      else {
        const next: Place | undefined = at === ROOT ? this.preopened.find((p) => p.path === `/${name}`) : { path: join(at.path, name), up: at }
        // The virtual `/` holds nothing but the grants (ENOTCAPABLE).
        if (!next) return undefined
        named.push((at = next))
      }
    }
    return { at, named }
  }
}

/** Whether two places are entries of one directory, as wasmer keeps it (the same parents). */
export function siblings(a: Place, b: Place): boolean {
  let x = a.up
  let y = b.up
  while (x && y && x !== y && x.path === y.path) {
    x = x.up
    y = y.up
  }
  return x === y
}

/** The names of a path, as wasmer walks them: empty ones and `.` are nothing. */
function names(path: string): string[] {
  return path.split('/').filter((n) => n !== '' && n !== '.')
}

function normalise(path: string): string {
  return `/${names(path).join('/')}`
}

function join(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`
}

/** Whether `path` is `dir` or lies below it. */
function within(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir === '/' ? '/' : `${dir}/`)
}
