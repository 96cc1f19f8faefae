// The Overview's numbers from one `system:monitoring` snapshot (the `@monitoring` push channel's data).
import { num } from './format'

// frames/s: the rate of the cumulative `frames_received` counter since the previous snapshot.
export function framesPerSecond(m, prev) {
  const now = num(m.frames_received)
  const before = prev ? num(prev.m.frames_received) : null
  if (now === null || before === null || prev.t >= m.__t) return null
  return Math.max(0, (now - before) / ((m.__t - prev.t) / 1000))
}

// reconnects: the collector's `disconnects` plus each market venue's `market_<venue>_reconnects`.
export function reconnects(m) {
  let total = num(m.disconnects) || 0
  for (const [k, v] of Object.entries(m)) {
    if (/^market_[a-z]+_reconnects$/.test(k)) total += num(v) || 0
  }
  return total
}

export const METRICS = [
  { key: 'connections', title: 'WebSocket connections', unit: '', read: (m) => num(m.websocket_connections) },
  { key: 'reconnects', title: 'Reconnects (cumulative)', unit: '', read: (m) => reconnects(m) },
  { key: 'frames', title: 'Frames / s', unit: '/s', read: (m, prev) => framesPerSecond(m, prev) },
  { key: 'latency', title: 'Processing latency', unit: 'ms', read: (m) => num(m.avg_processing_latency) },
  { key: 'redis', title: 'Redis memory', unit: 'bytes', read: (m) => num(m.redis_memory_usage) },
  { key: 'influx', title: 'InfluxDB write rate', unit: 'points/s', read: (m) => num(m.influxdb_write_rate) },
]
