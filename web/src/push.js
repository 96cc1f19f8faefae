// One WebSocket to the service's push gateway (`/ws`, DESIGN "Push"), shared by every page.
//
// subscribe(channel, fn, onLive) -> unsubscribe(). `onLive()` runs at each acknowledgement of the subscription
// (the first and every resubscribe): a page reads its REST snapshot then, so whatever happened before the
// channel was live is in the snapshot and everything after it is pushed. The client keeps the last stream id of each channel and, after the
// socket drops, reconnects with capped, jittered exponential backoff (reset once a connection is good),
// re-authenticates, and resubscribes every channel with `since` = that id, so nothing is missed in between; a
// client too far behind gets the gateway's `"reset": true` snapshot instead, which handlers treat as a snapshot.
// A watchdog pings every 15 s and drops a socket that has been silent for 45 s.
import { reactive } from 'vue'

const BACKOFF_FIRST_MS = 500
const BACKOFF_MAX_MS = 8000
const PING_MS = 15000
const SILENT_MS = 45000

export const connection = reactive({
  state: 'connecting', // connecting | live | reconnecting
  retryInMs: 0,
  reconnects: 0,
  lastError: '',
})

class PushClient {
  constructor() {
    this.handlers = new Map() // channel -> Set(fn)
    this.lastIds = new Map() // channel -> last stream id seen
    this.liveHandlers = new Map() // channel -> Set(onLive)
    this.token = null
    this.ws = null
    this.attempt = 0
    this.timer = null
    this.pinger = null
    this.lastMessageAt = 0
    this.everOpened = false
  }

  url() {
    const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws'
    return `${scheme}://${window.location.host}/ws`
  }

  start() {
    if (this.ws || this.timer) return
    this.connect()
  }

  connect() {
    this.timer = null
    let ws
    try {
      ws = new WebSocket(this.url())
    } catch (err) {
      connection.lastError = String(err)
      this.scheduleReconnect()
      return
    }
    this.ws = ws
    ws.onopen = () => {
      this.attempt = 0
      this.everOpened = true
      this.lastMessageAt = Date.now()
      connection.state = 'live'
      connection.retryInMs = 0
      connection.lastError = ''
      if (this.token) this.send({ op: 'auth', token: this.token })
      for (const channel of this.handlers.keys()) this.sendSubscribe(channel)
      this.pinger = setInterval(() => this.keepAlive(), PING_MS)
    }
    ws.onmessage = (ev) => this.onMessage(ev.data)
    ws.onerror = () => {} // onclose follows and says what to do
    ws.onclose = (ev) => {
      if (this.ws !== ws) return
      this.ws = null
      clearInterval(this.pinger)
      this.pinger = null
      connection.lastError = ev.reason || `closed (${ev.code})`
      if (this.everOpened) connection.reconnects += 1
      this.scheduleReconnect()
    }
  }

  scheduleReconnect() {
    connection.state = this.everOpened ? 'reconnecting' : 'connecting'
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt)
    const delay = Math.round(base / 2 + Math.random() * base / 2)
    this.attempt += 1
    connection.retryInMs = delay
    this.timer = setTimeout(() => this.connect(), delay)
  }

  keepAlive() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return
    if (Date.now() - this.lastMessageAt > SILENT_MS) {
      this.ws.close(4000, 'silent')
      return
    }
    this.send({ op: 'ping' })
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg))
  }

  sendSubscribe(channel) {
    const msg = { op: 'subscribe', channel }
    const since = this.lastIds.get(channel)
    if (since) msg.since = since
    this.send(msg)
  }

  onMessage(text) {
    this.lastMessageAt = Date.now()
    let msg
    try {
      msg = JSON.parse(text)
    } catch {
      console.warn('push: not JSON', String(text).slice(0, 80))
      return
    }
    if (msg && typeof msg.event === 'string') {
      if (msg.id) this.lastIds.set(msg.event, msg.id)
      const fns = this.handlers.get(msg.event)
      if (fns) for (const fn of [...fns]) fn(msg.data, msg)
      return
    }
    if (msg && msg.code !== undefined && msg.msg !== undefined) {
      console.warn(`push: ${msg.code} ${msg.msg}`)
    }
    if (msg && msg.result === true && typeof msg.channel === 'string') {
      const fns = this.liveHandlers.get(msg.channel)
      if (fns) for (const fn of [...fns]) fn()
    }
    // other acknowledgements and {"op": "pong"} need nothing.
  }

  subscribe(channel, fn, onLive) {
    let fns = this.handlers.get(channel)
    if (!fns) {
      fns = new Set()
      this.handlers.set(channel, fns)
      this.liveHandlers.set(channel, new Set())
      this.sendSubscribe(channel)
    }
    fns.add(fn)
    if (onLive) this.liveHandlers.get(channel).add(onLive)
    this.start()
    return () => {
      const set = this.handlers.get(channel)
      if (!set) return
      set.delete(fn)
      if (onLive) this.liveHandlers.get(channel).delete(onLive)
      if (set.size === 0) {
        this.handlers.delete(channel)
        this.liveHandlers.delete(channel)
        this.lastIds.delete(channel)
        this.send({ op: 'unsubscribe', channel })
      }
    }
  }

  auth(token) {
    this.token = token || null
    if (this.token) this.send({ op: 'auth', token: this.token })
  }
}

export const push = new PushClient()
