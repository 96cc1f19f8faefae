// REST calls to the service (DESIGN "REST"): same origin, JSON, errors as {"code", "msg"}.
import { settings } from './settings'

export class ApiError extends Error {
  constructor(status, code, msg) {
    super(msg)
    this.status = status
    this.code = code
  }
}

export function query(params) {
  const q = new URLSearchParams()
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v))
  }
  const s = q.toString()
  return s ? `?${s}` : ''
}

export async function api(path, opts = {}) {
  return (await apiFull(path, opts)).data
}

// The body and the response headers (history pages carry X-Next-Start).
export async function apiFull(path, { method = 'GET', body, params, raw = false } = {}) {
  const headers = { Accept: 'application/json' }
  if (settings.apiKey) headers.Authorization = `Bearer ${settings.apiKey}`
  const init = { method, headers }
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json'
    init.body = JSON.stringify(body)
  }
  let res
  try {
    res = await fetch(path + query(params), init)
  } catch (err) {
    throw new ApiError(0, 'unreachable', 'the service is unreachable')
  }
  const text = await res.text()
  let data = null
  if (raw && res.ok) return { data: text, headers: res.headers }
  if (text) {
    try {
      data = JSON.parse(text)
    } catch {
      data = text
    }
  }
  if (!res.ok) {
    const code = (data && data.code) || `http_${res.status}`
    const msg = (data && data.msg) || res.statusText || 'request failed'
    throw new ApiError(res.status, code, msg)
  }
  return { data, headers: res.headers }
}

// Which stores the service reaches (GET /v1/status `stores`), asked once per page load: without InfluxDB the
// pages skip the history routes (they would only answer 503) and say so.
let storesPromise = null
export function stores() {
  if (!storesPromise) {
    storesPromise = api('/v1/status').then((s) => (s && s.stores) || {}).catch(() => {
      storesPromise = null
      return {}
    })
  }
  return storesPromise
}

export async function historyAvailable() {
  return (await stores()).influxdb !== 'disabled'
}

export function errorText(err) {
  if (err instanceof ApiError) {
    if (err.status === 401) return 'API key missing or invalid: set it in Settings'
    if (err.status === 403) return 'this needs an admin API key'
    return `${err.msg} (${err.code})`
  }
  return String(err && err.message ? err.message : err)
}
