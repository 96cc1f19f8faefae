// Candles: GET /v1/klines rows ([open_time_ms, "open", "high", "low", "close", "volume", trades, closed],
// oldest first) merged with the live `<exchange>:<inst>@kline_1m` bar (the `kline:` hash fields).
import { parseTime } from './format'

export function fromRow(r) {
  return { t: Number(r[0]), o: r[1], h: r[2], l: r[3], c: r[4], v: r[5], trades: r[6], closed: r[7] }
}

export function fromHash(d) {
  const t = parseTime(d.open_time)
  if (t === null) return null
  return {
    t, o: d.open, h: d.high, l: d.low, c: d.close, v: d.volume, trades: d.trades,
    closed: d.closed === true || d.closed === 'true',
  }
}

export function merge(bars, bar, max = 500) {
  if (!bar) return bars
  const out = bars.slice()
  const i = out.findIndex((b) => b.t === bar.t)
  if (i >= 0) out[i] = bar
  else if (!out.length || bar.t > out[out.length - 1].t) out.push(bar)
  else return bars // an older bar than the ones shown: nothing to redraw
  return out.length > max ? out.slice(out.length - max) : out
}

function hhmm(t) {
  return new Date(t).toISOString().slice(11, 16)
}

export function candleOption(bars) {
  return {
    animation: false,
    grid: { left: 64, right: 16, top: 16, bottom: 56 },
    tooltip: { trigger: 'axis', axisPointer: { type: 'cross' } },
    xAxis: { type: 'category', data: bars.map((b) => hhmm(b.t)), boundaryGap: true, axisLabel: { hideOverlap: true } },
    yAxis: { type: 'value', scale: true, splitNumber: 4 },
    dataZoom: [
      { type: 'inside' },
      { type: 'slider', height: 18, bottom: 8 },
    ],
    series: [{
      name: '1m', type: 'candlestick',
      // ECharts order: open, close, low, high
      data: bars.map((b) => [Number(b.o), Number(b.c), Number(b.l), Number(b.h)]),
      itemStyle: { color: '#2ea043', color0: '#f85149', borderColor: '#2ea043', borderColor0: '#f85149' },
    }],
  }
}
