// examples/gulpfile.mjs: npx gulp --gulpfile examples/gulpfile.mjs --cwd some/project
import gulp from 'gulp'
import wasmGulp from 'wasm-sandbox/gulp'

const { src, dest, series } = gulp
const upper = new URL('./upper.wasm', import.meta.url) // any guest: a path, a URL or bytes

// Buffer mode (gulp's default): logs/app/today.log -> build/app/today.upper.log.
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
