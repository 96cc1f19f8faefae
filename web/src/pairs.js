// `GET/POST/DELETE /v1/pairs[/{inst}]`: the monitored pairs (`config:trading_pairs`) and the rejected ids.
import { api, ApiError } from './api'

function idOf(p) {
  return typeof p === 'string' ? p : (p && (p.inst || p.instrument_id || p.id || p.pair)) || ''
}

export async function loadPairs() {
  const data = await api('/v1/pairs')
  const list = Array.isArray(data) ? data : (data && (data.pairs || data.trading_pairs || data.instruments)) || []
  let rejected = (data && !Array.isArray(data) && data.rejected) || {}
  if (Array.isArray(rejected)) {
    rejected = Object.fromEntries(rejected.map((r) => [idOf(r), r.reason || r.msg || '']))
  }
  const pairs = list.map(idOf).filter(Boolean).sort()
  return { pairs, rejected }
}

export async function addPair(inst) {
  try {
    return await api(`/v1/pairs/${encodeURIComponent(inst)}`, { method: 'POST' })
  } catch (err) {
    if (err instanceof ApiError && (err.status === 405 || (err.status === 404 && err.code !== 'not_found'))) {
      return api('/v1/pairs', { method: 'POST', body: { inst } })
    }
    throw err
  }
}

export function removePair(inst) {
  return api(`/v1/pairs/${encodeURIComponent(inst)}`, { method: 'DELETE' })
}
