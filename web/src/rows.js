// History routes answer a list of objects; also accept {rows|results|data: [...]} and InfluxQL-style
// {columns: [...], values: [[...]]}, so the page does not depend on the wrapper.
export function toRows(data) {
  if (!data) return []
  if (Array.isArray(data)) {
    if (data.length && Array.isArray(data[0]) && data.columns) return []
    return data
  }
  for (const k of ['rows', 'results', 'data', 'points', 'alerts', 'items']) {
    if (Array.isArray(data[k])) return toRows(data[k])
  }
  if (Array.isArray(data.columns) && Array.isArray(data.values)) {
    return data.values.map((v) => Object.fromEntries(data.columns.map((c, i) => [c, v[i]])))
  }
  return []
}

export function rowTime(r) {
  return r.time ?? r.timestamp ?? r.ts ?? r._time ?? r.analysis_time ?? null
}
