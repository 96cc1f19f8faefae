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

export async function api(path, { method = 'GET', body, params } = {}) {
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
  return data
}

export function errorText(err) {
  if (err instanceof ApiError) {
    if (err.status === 401) return 'API key missing or invalid: set it in Settings'
    if (err.status === 403) return 'this needs an admin API key'
    return `${err.msg} (${err.code})`
  }
  return String(err && err.message ? err.message : err)
}
