// When a row happened: history routes' rows carry `time` (epoch ms), live `@alerts` events `timestamp` (ISO-8601).
export function rowTime(r) {
  return r.time ?? r.timestamp ?? null
}
