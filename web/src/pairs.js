// `GET/POST/DELETE /v1/pairs[/{inst}]`: the monitored pairs (`config:trading_pairs`) and the rejected ids; each
// answers `{"pairs": [ids, sorted], "rejected": {id: reason}}`.
import { api } from './api'

export function loadPairs() {
  return api('/v1/pairs')
}

export function addPair(inst) {
  return api(`/v1/pairs/${encodeURIComponent(inst)}`, { method: 'POST' })
}

export function removePair(inst) {
  return api(`/v1/pairs/${encodeURIComponent(inst)}`, { method: 'DELETE' })
}
