// The Overview's numbers from one `system:monitoring` snapshot (the `@monitoring` push channel's data).
import { num } from './format'

// frames/s: a gauge when the pipeline publishes one, else the rate of a cumulative frame counter.
const RATE_FIELDS = ['frames_per_second', 'frames_per_s', 'frame_rate', 'messages_per_second']
const COUNTER_FIELDS = ['frames_received', 'frames', 'messages_received', 'messages']

export function framesPerSecond(m, prev) {
  for (const f of RATE_FIELDS) if (num(m[f]) !== null) return num(m[f])
  if (!prev) return null
  for (const f of COUNTER_FIELDS) {
    const now = num(m[f])
    const before = num(prev.m[f])
    if (now !== null && before !== null && prev.t < m.__t) {
      return Math.max(0, (now - before) / ((m.__t - prev.t) / 1000))
    }
  }
  return null
}

// reconnects: a total when published, else the collector's disconnects plus each market venue's reconnects.
export function reconnects(m) {
  if (num(m.reconnects) !== null) return num(m.reconnects)
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
