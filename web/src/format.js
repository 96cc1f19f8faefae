// Display helpers: numbers stay the exchange's strings until shown.
export function num(v) {
  if (v === null || v === undefined || v === '') return null
  const n = Number(v)
  return Number.isFinite(n) ? n : null
}

export function fmt(v, digits = 2) {
  const n = num(v)
  if (n === null) return '—'
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: 0 })
}

export function fmtBytes(v) {
  const n = num(v)
  if (n === null) return '—'
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let x = n
  let i = 0
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024
    i += 1
  }
  return `${x.toFixed(i === 0 ? 0 : 1)} ${units[i]}`
}

export function parseTime(v) {
  if (v === null || v === undefined || v === '') return null
  if (typeof v === 'number') return v
  if (/^\d+$/.test(String(v))) return Number(v)
  const t = Date.parse(v)
  return Number.isFinite(t) ? t : null
}

export function fmtTime(v) {
  const t = parseTime(v)
  if (t === null) return '—'
  return new Date(t).toISOString().slice(11, 19)
}

export function fmtDateTime(v) {
  const t = parseTime(v)
  if (t === null) return '—'
  return new Date(t).toISOString().replace('T', ' ').slice(0, 19)
}

export function fmtAge(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—'
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`
  if (ms < 3600000) return `${Math.floor(ms / 60000)} min`
  return `${(ms / 3600000).toFixed(1)} h`
}

// Calls fn with the latest arguments at most once per `ms` (trailing): live channels can arrive faster than a
// chart is worth redrawing.
export function throttle(fn, ms) {
  let timer = null
  let last = 0
  let args = null
  const run = () => {
    timer = null
    last = Date.now()
    fn(...args)
  }
  const call = (...a) => {
    args = a
    if (timer) return
    timer = setTimeout(run, Math.max(0, last + ms - Date.now()))
  }
  call.cancel = () => {
    clearTimeout(timer)
    timer = null
  }
  return call
}
