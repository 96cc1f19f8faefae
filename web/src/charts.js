// ECharts with only what the pages draw (tree-shaken through echarts/core).
import * as echarts from 'echarts/core'
import { CandlestickChart, GaugeChart, LineChart, ScatterChart } from 'echarts/charts'
import {
  DataZoomComponent, GridComponent, LegendComponent, MarkLineComponent, MarkPointComponent, TooltipComponent,
} from 'echarts/components'
import { CanvasRenderer } from 'echarts/renderers'

echarts.use([
  CandlestickChart, GaugeChart, LineChart, ScatterChart,
  DataZoomComponent, GridComponent, LegendComponent, MarkLineComponent, MarkPointComponent, TooltipComponent,
  CanvasRenderer,
])

export default echarts

export const LEVEL_COLORS = { normal: '#2ea043', warning: '#d29922', alert: '#f85149' }
export const BID = '#2ea043'
export const ASK = '#f85149'
