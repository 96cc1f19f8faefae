// The user's settings, kept in this browser's localStorage: the API key (admin keys also manage pairs) and
// the email address new price alerts go to.
import { reactive, watch } from 'vue'

const KEY = 'cryptoflow.apiKey'
const EMAIL = 'cryptoflow.email'

function load(name) {
  try {
    return window.localStorage.getItem(name) || ''
  } catch {
    return ''
  }
}

export const settings = reactive({ apiKey: load(KEY), email: load(EMAIL) })

watch(() => [settings.apiKey, settings.email], ([apiKey, email]) => {
  try {
    if (apiKey) window.localStorage.setItem(KEY, apiKey)
    else window.localStorage.removeItem(KEY)
    if (email) window.localStorage.setItem(EMAIL, email)
    else window.localStorage.removeItem(EMAIL)
  } catch {
    // private mode: settings last for this tab only
  }
})
