// Hash history: every page is /#/..., so the service only has to serve index.html at `/`.
import { createRouter, createWebHashHistory } from 'vue-router'
import Overview from './views/Overview.vue'

const routes = [
  { path: '/', name: 'overview', component: Overview, meta: { title: 'Overview' } },
  { path: '/pairs', name: 'pairs', component: () => import('./views/Pairs.vue'), meta: { title: 'Pairs' } },
  {
    path: '/instrument/:inst?', name: 'instrument', component: () => import('./views/Instrument.vue'),
    meta: { title: 'Instrument' },
  },
  { path: '/alerts', name: 'alerts', component: () => import('./views/Alerts.vue'), meta: { title: 'Alerts' } },
  { path: '/history', name: 'history', component: () => import('./views/History.vue'), meta: { title: 'History' } },
  { path: '/:rest(.*)*', redirect: '/' },
]

const router = createRouter({ history: createWebHashHistory(), routes })
router.afterEach((to) => {
  document.title = `${to.meta.title || 'cryptoflow'} · cryptoflow`
})
export default router
