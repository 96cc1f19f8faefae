// The browser monitor, served by `cryptoflow serve` from web/dist at `/` (API at /v1, push at /ws).
// `npm run dev` proxies both to a local service (CRYPTOFLOW_URL, default http://127.0.0.1:8000).
import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'

const target = process.env.CRYPTOFLOW_URL || 'http://127.0.0.1:8000'

export default defineConfig({
  base: '/',
  plugins: [vue()],
  build: {
    target: 'es2020',
    chunkSizeWarningLimit: 900,
    rollupOptions: {
      output: {
        // Two stable vendor chunks: charts and the UI kit change rarely, the app often.
        manualChunks(id) {
          if (id.includes('node_modules/echarts') || id.includes('node_modules/zrender')) return 'echarts'
          if (id.includes('node_modules/element-plus') || id.includes('node_modules/@element-plus')) return 'element'
          if (id.includes('node_modules/')) return 'vendor'
          return undefined
        },
      },
    },
  },
  server: {
    proxy: {
      '/v1': target,
      '/ws': { target: target.replace(/^http/, 'ws'), ws: true },
    },
  },
})
