// A gulpfile using wasm-sandbox/gulp. From a clone of the repository, after `npm ci`:
//   npx gulp --gulpfile examples/gulpfile.mjs --cwd some/project
// reads some/project/logs/**/*.log and some/project/data/*.txt and writes some/project/build/.
import gulp from 'gulp'
import wasmGulp from 'wasm-sandbox/gulp'

const { src, dest, series } = gulp
// Any guest: a path, a URL or bytes. This one upper-cases ASCII.
const upper = new URL('./upper.wasm', import.meta.url)

// Buffer mode (gulp's default): each file goes through whole, with a fresh guest instance,
// and is renamed: logs/app/today.log -> build/app/today.upper.log.
// `encoding: false` keeps the bytes as they are (gulp 5 decodes files as UTF-8 by default).
export function logs() {
  return src('logs/**/*.log', { encoding: false })
    .pipe(wasmGulp(upper, { extname: '.upper.log' }))
    .pipe(dest('build'))
}

// Streaming mode: large files flow through the guest as they are read, never whole in memory.
export function data() {
  return src('data/*.txt', { buffer: false, encoding: false })
    .pipe(wasmGulp(upper, { delimiter: '\n', limits: { timeout: 2000 } }))
    .pipe(dest('build/data'))
}

export default series(logs, data)
