// The depth chart's series from top-N levels ([[price, size], ...] strings, best first) and the analysis hash.
import { ASK, BID } from './charts'
import { num } from './format'

export const LARGE_K = 5 // a level is large at >= 5 x the median size of its side (the analysis default)

function median(xs) {
  if (!xs.length) return null
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2
}

export function cumulative(levels) {
  const out = []
  let total = 0
  for (const [p, s] of levels || []) {
    total += Number(s)
    out.push([Number(p), total, Number(s)])
  }
  return out
}

export function largeLevels(levels, k = LARGE_K) {
  const sizes = (levels || []).map(([, s]) => Number(s))
  const m = median(sizes)
  if (m === null || m <= 0) return []
  return cumulative(levels).filter(([, , size]) => size >= k * m)
}

export function depthOption(book, analysis) {
  const bids = cumulative(book.bids).reverse() // ascending price for the x axis
  const asks = cumulative(book.asks)
  const prices = [...bids.map((x) => x[0]), ...asks.map((x) => x[0])]
  const lines = []
  const a = analysis || {}
  for (const [field, name, color] of [
    ['support_level_1', 'S1', BID], ['support_level_2', 'S2', BID],
    ['resistance_level_1', 'R1', ASK], ['resistance_level_2', 'R2', ASK],
  ]) {
    const v = num(a[field])
    if (v !== null) lines.push({ name, xAxis: v, lineStyle: { color, type: 'dashed', width: 1.5 }, label: { color } })
  }
  let min = prices.length ? Math.min(...prices) : undefined
  let max = prices.length ? Math.max(...prices) : undefined
  if (min !== undefined) {
    const span = Math.max(max - min, max * 0.0005)
    for (const l of lines) {
      if (l.xAxis >= min - span && l.xAxis <= max + span) {
        min = Math.min(min, l.xAxis)
        max = Math.max(max, l.xAxis)
      }
    }
    const pad = (max - min) * 0.02
    min -= pad
    max += pad
  }
  const large = [
    ...largeLevels(book.bids).map(([p, c, s]) => ({ value: [p, c], size: s, itemStyle: { color: BID } })),
    ...largeLevels(book.asks).map(([p, c, s]) => ({ value: [p, c], size: s, itemStyle: { color: ASK } })),
  ]
  return {
    animation: false,
    grid: { left: 56, right: 16, top: 28, bottom: 28 },
    legend: { top: 0, data: ['bids', 'asks', 'large orders'] },
    tooltip: { trigger: 'axis', axisPointer: { type: 'cross' } },
    xAxis: {
      type: 'value', min, max, scale: true,
      axisLabel: { hideOverlap: true, showMinLabel: false, showMaxLabel: false, formatter: (v) => v.toLocaleString('en-US', { maximumFractionDigits: 6 }) },
    },
    yAxis: { type: 'value', name: 'cumulative size', nameTextStyle: { align: 'left' } },
    series: [
      {
        name: 'bids', type: 'line', step: 'end', showSymbol: false, data: bids.map(([p, c]) => [p, c]),
        lineStyle: { color: BID }, itemStyle: { color: BID }, areaStyle: { color: BID, opacity: 0.2 },
        markLine: { symbol: 'none', silent: true, label: { formatter: '{b}', position: 'end' }, data: lines, animation: false },
      },
      {
        name: 'asks', type: 'line', step: 'start', showSymbol: false, data: asks.map(([p, c]) => [p, c]),
        lineStyle: { color: ASK }, itemStyle: { color: ASK }, areaStyle: { color: ASK, opacity: 0.2 },
      },
      {
        name: 'large orders', type: 'scatter', data: large, symbol: 'diamond', symbolSize: 12,
        itemStyle: { color: '#8250df' }, z: 5,
        tooltip: { formatter: (p) => `large order: ${p.data.size} @ ${p.value[0]}` },
      },
    ],
  }
}
