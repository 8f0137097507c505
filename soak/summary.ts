/** The soak's summary table, as printed by `npm run soak`. */
import { FAILURE_KINDS, type SoakSummary } from './runner.js'

export function formatSummary(s: SoakSummary): string {
  const rows: Array<[string, string]> = [
    ['cases', String(s.cases)],
    ['ok outputs', String(s.ok)],
    ...Object.entries(s.typed)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([code, n]): [string, string] => [`  ${code}`, String(n)]),
    ...FAILURE_KINDS.map((k): [string, string] => [{ crash: 'crashes', hang: 'hangs', untyped: 'untyped errors', 'leaked-worker': 'leaked workers', 'leaked-handle': 'leaked handles' }[k], String(s.counts[k])]),
    ['duration', `${(s.ms / 1000).toFixed(1)} s`],
  ]
  const width = Math.max(...rows.map(([k]) => k.length))
  const lines = rows.map(([k, v]) => `${k.padEnd(width)}  ${v.padStart(8)}`)
  if (s.warnings.length > 0) lines.push('', `process warnings (${s.warnings.length}):`, ...s.warnings.slice(0, 10).map((w) => `  ${w}`))
  if (s.failures.length > 0) {
    lines.push('', 'failures (replay one with the command shown):')
    for (const f of s.failures) lines.push(`  ${f.kind} case ${f.index}: ${f.detail.split('\n').join('\n      ')}`, `    npm run soak -- --replay ${f.dir}`)
  }
  return lines.join('\n')
}
