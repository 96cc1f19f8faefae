import { createApp } from 'vue'
import App from './App.vue'
import elements from './elements'
import router from './router'
import { push } from './push'
import { settings } from './settings'
import './style.css'

push.auth(settings.apiKey)
push.start()
createApp(App).use(elements).use(router).mount('#app')
