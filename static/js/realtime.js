// RealtimeSocket: one reconnecting connection per endpoint. No framework, no build step.
//
//   const s = new RealtimeSocket("/ws/chat/lobby/", { itemOf: (f) => f.type === "message" && f.message });
//   s.addEventListener("state", (e) => ...);    // "connecting" | "open" | "reconnecting" | "offline"
//   s.addEventListener("message", (e) => ...);  // every server frame type is an event; detail = the frame
//
// What it does (see docs/protocol.md, "Browser client"):
// - reconnects with exponential backoff and full jitter: delay = random(0, min(maxDelay, baseDelay * 2^n));
//   so does a worker shedding load: its 503 refusal of the handshake (which a browser reports as a close
//   with 1006, hiding the status and Retry-After) or its close with 1013 (overloaded). Only after close
//   code 1012 (server restarting) does it reconnect within random(0, restartJitter) instead;
// - stops on 4401 / 4403 / 4404 (state "offline", a "closed" event; 4401 sends the user to log in);
// - resumes: it remembers the last id it saw and, after each later `welcome`, sends `resume` with it.
//   The resume point moves with `replay_done.last_id` and, once a replay is done, with each live item;
// - drops items (notifications, messages) whose id it already delivered, so a page never sees one twice;
// - sends `ping` after `pingInterval` ms of silence and treats the socket as dead when nothing comes
//   back within `pongTimeout` ms (by default a dead link is noticed within 25 s);
// - `post(frame)` keeps a frame with a `client_id` in an outbox until the server echoes it back, and
//   re-sends it with the same client_id after every reconnect, so nothing is lost and nothing doubles.
// - `openOnConnect` (endpoints without a `welcome`, such as /ws/live/): the state is "open" as soon as
//   the socket opens, with an "open" event after each (re)connect for the page to subscribe again.
(function () {
  "use strict";

  const FINAL_CODES = new Set([4401, 4403, 4404]);
  const RESTARTING = 1012;
  // Errors after which re-sending the same frame cannot succeed.
  const PERMANENT_ERRORS = new Set(["invalid_json", "invalid_message", "unknown_type", "too_large", "forbidden"]);

  const DEFAULTS = {
    baseDelay: 500, // ms, first backoff step
    maxDelay: 30000, // ms, backoff cap
    restartJitter: 1000, // ms, spread of reconnects after 1012
    pingInterval: 15000, // ms of silence before a ping
    pongTimeout: 10000, // ms to wait for any frame after a ping
    loginUrl: "/accounts/login/",
    redirectOnAuthFailure: true,
    itemOf: null, // frame -> item with an `id` (notification, message) or null
    openOnConnect: false, // "open" (and an "open" event) when the socket opens, not at `welcome`
  };

  function randomId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + "-" + Math.random().toString(36).slice(2);
  }

  class RealtimeSocket extends EventTarget {
    constructor(path, options = {}) {
      super();
      this.path = path;
      // Page-wide overrides (tests and operators): window.RELAY_SOCKET_OPTIONS.
      this.options = Object.assign({}, DEFAULTS, window.RELAY_SOCKET_OPTIONS || {}, options);
      this.state = null;
      this.attempt = 0; // failed attempts since the last welcome
      this.lastId = null; // resume point: every item with id <= lastId was seen (null: never connected)
      this.synced = false; // this connection finished its replay, live items may move lastId
      this.welcomeLastId = null; // newest id when the current connection was welcomed
      this.delivered = new Set(); // item ids already handed to the page
      this.outbox = new Map(); // client_id -> frame, until the server echoes it
      this.ws = null;
      this.timer = null;
      this.stopped = false;
      this.lastFrameAt = 0;
      this.pingSentAt = 0;
      window.addEventListener("online", () => this.reconnectNow());
      this.connect();
    }

    // --- public API ----------------------------------------------------------------
    /** Resume from this id on the first welcome too (the page already shows everything up to it). */
    resumeFrom(id) {
      if (this.lastId === null || id > this.lastId) this.lastId = id;
    }

    /** Mark ids the page already shows (server-rendered), so they are never delivered again. */
    markDelivered(ids) {
      ids.forEach((id) => this.delivered.add(id));
    }

    /** Send now if open; returns false when the frame could not be sent. */
    send(frame) {
      if (this.state === "open" && this.ws && this.ws.readyState === WebSocket.OPEN) {
        this.ws.send(JSON.stringify(frame));
        return true;
      }
      return false;
    }

    /** Send a frame that must arrive once: queued while offline, re-sent after reconnects. */
    post(frame) {
      const clientId = frame.client_id || randomId();
      const full = Object.assign({}, frame, { client_id: clientId, ref: clientId });
      this.outbox.set(clientId, full);
      this.send(full);
      return clientId;
    }

    pending() {
      return Array.from(this.outbox.values());
    }

    reconnectNow() {
      if (this.stopped || this.state === "open" || this.state === "connecting") return;
      clearTimeout(this.timer);
      this.connect();
    }

    close() {
      this.stopped = true;
      clearTimeout(this.timer);
      this.stopHeartbeat();
      if (this.ws) this.ws.close(1000);
      this.setState("offline");
    }

    // --- connection ----------------------------------------------------------------
    url() {
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      return scheme + "//" + location.host + this.path;
    }

    setState(state) {
      if (this.state === state) return;
      this.state = state;
      this.dispatchEvent(new CustomEvent("state", { detail: state }));
    }

    // A page's connection pill (#conn-state on the inbox and in a room) follows this socket from now on.
    showStateIn(el) {
      this.addEventListener("state", (e) => {
        el.textContent = RealtimeSocket.stateLabel(e.detail);
        el.dataset.state = e.detail;
      });
    }

    connect() {
      if (this.stopped) return;
      this.setState(this.lastId === null && this.attempt === 0 ? "connecting" : "reconnecting");
      clearTimeout(this.timer);
      this.drop(); // never two sockets at once
      let ws;
      try {
        ws = new WebSocket(this.url());
      } catch (err) {
        this.scheduleReconnect(null);
        return;
      }
      this.ws = ws;
      this.synced = false;
      ws.onopen = () => {
        if (ws !== this.ws) return;
        this.startHeartbeat();
        if (this.options.openOnConnect) {
          this.setState("open");
          this.dispatchEvent(new CustomEvent("open"));
        }
      };
      ws.onmessage = (e) => {
        if (ws !== this.ws) return;
        this.lastFrameAt = Date.now();
        this.pingSentAt = 0;
        let frame;
        try {
          frame = JSON.parse(e.data);
        } catch (err) {
          return;
        }
        if (frame && typeof frame.type === "string") this.onFrame(frame);
      };
      ws.onclose = (e) => {
        if (ws === this.ws) this.onClose(e.code, e.reason);
      };
    }

    drop() {
      // Forget the current socket without waiting for a close handshake (a dead link never answers).
      const ws = this.ws;
      this.ws = null;
      if (ws) {
        ws.onopen = ws.onmessage = ws.onclose = null;
        try {
          ws.close();
        } catch (err) {
          /* already closed */
        }
      }
    }

    onClose(code, reason) {
      this.stopHeartbeat();
      this.ws = null;
      if (this.stopped) return;
      if (FINAL_CODES.has(code)) {
        this.stopped = true;
        this.setState("offline");
        this.dispatchEvent(new CustomEvent("closed", { detail: { code, reason } }));
        if (code === 4401 && this.options.redirectOnAuthFailure) {
          const next = location.pathname + location.search;
          location.assign(this.options.loginUrl + "?next=" + encodeURIComponent(next));
        }
        return;
      }
      this.scheduleReconnect(code);
    }

    scheduleReconnect(code) {
      clearTimeout(this.timer);
      this.setState("reconnecting");
      this.timer = setTimeout(() => this.connect(), this.nextDelay(code));
    }

    /** Milliseconds before the next attempt: full jitter, capped; prompt (jittered) after 1012.
     *  A refused handshake (1006) and 1013 (overloaded) back off like any failure: `n` grows until a
     *  welcome, so a crowd refused by a busy worker spreads out more at each refusal. */
    nextDelay(code) {
      const o = this.options;
      if (code === RESTARTING) return Math.random() * o.restartJitter;
      const cap = Math.min(o.maxDelay, o.baseDelay * Math.pow(2, this.attempt));
      this.attempt += 1;
      return Math.random() * cap;
    }

    // --- dead-connection detection -----------------------------------------------------
    startHeartbeat() {
      this.stopHeartbeat();
      this.lastFrameAt = Date.now();
      this.pingSentAt = 0;
      const tick = Math.max(50, Math.min(this.options.pingInterval, this.options.pongTimeout) / 4);
      this.heartbeat = setInterval(() => this.checkAlive(), tick);
    }

    stopHeartbeat() {
      clearInterval(this.heartbeat);
      this.heartbeat = null;
    }

    checkAlive() {
      const now = Date.now();
      if (this.pingSentAt && now - this.pingSentAt > this.options.pongTimeout) {
        this.stopHeartbeat();
        this.drop();
        this.scheduleReconnect(null);
        return;
      }
      if (!this.pingSentAt && now - this.lastFrameAt > this.options.pingInterval) {
        if (this.ws && this.ws.readyState === WebSocket.OPEN) {
          this.ws.send(JSON.stringify({ type: "ping" }));
          this.pingSentAt = now;
        }
      }
    }

    // --- frames in ---------------------------------------------------------------------
    onFrame(frame) {
      // Without a welcome, any frame shows the server took the socket: the backoff starts over.
      // (A socket closed right after opening, 4429 or 1011, gets none and keeps backing off.)
      if (this.options.openOnConnect) this.attempt = 0;
      switch (frame.type) {
        case "welcome":
          return this.onWelcome(frame);
        case "replay_done":
          if (frame.last_id !== null && frame.last_id !== undefined) this.advance(frame.last_id);
          if (frame.more) this.ws.send(JSON.stringify({ type: "resume", after: this.lastId || 0 }));
          else this.synced = true;
          break;
        case "error":
          if (frame.ref && this.outbox.has(frame.ref)) {
            const queued = this.outbox.get(frame.ref);
            if (PERMANENT_ERRORS.has(frame.code)) {
              this.outbox.delete(frame.ref);
              this.dispatchEvent(new CustomEvent("rejected", { detail: { frame: queued, error: frame } }));
            } else {
              // rate_limited, unavailable, server_error: try the same frame (same client_id) again soon.
              const wait = this.options.baseDelay * (1 + Math.random()) * 2;
              setTimeout(() => this.outbox.has(frame.ref) && this.send(queued), wait);
            }
          }
          break;
        case "pong":
          return;
        default: {
          const item = this.options.itemOf ? this.options.itemOf(frame) : null;
          if (item && typeof item.id === "number") {
            if (item.client_id && this.outbox.has(item.client_id)) this.outbox.delete(item.client_id);
            if (this.delivered.has(item.id)) return; // a duplicate: the page has it already
            this.delivered.add(item.id);
            if (this.synced) this.advance(item.id);
          }
        }
      }
      this.dispatchEvent(new CustomEvent(frame.type, { detail: frame }));
    }

    onWelcome(frame) {
      this.attempt = 0;
      const history = (frame.messages || []).map((m) => m.id);
      let newest = frame.last_id;
      if (newest === undefined) newest = history.length ? Math.max.apply(null, history) : null;
      this.welcomeLastId = newest === null ? 0 : newest;
      const resuming = this.lastId !== null;
      if (!resuming) {
        // A fresh client starts from what the server has now.
        this.lastId = this.welcomeLastId;
        this.synced = true;
      }
      this.setState("open");
      this.dispatchEvent(new CustomEvent("welcome", { detail: frame }));
      history.forEach((id) => this.delivered.add(id));
      if (resuming) this.ws.send(JSON.stringify({ type: "resume", after: this.lastId }));
      this.outbox.forEach((queued) => this.ws.send(JSON.stringify(queued)));
    }

    advance(id) {
      if (this.lastId === null || id > this.lastId) this.lastId = id;
    }
  }

  const LABELS = { connecting: "connecting…", open: "live", reconnecting: "reconnecting…", offline: "offline" };
  RealtimeSocket.stateLabel = (state) => LABELS[state] || state;
  RealtimeSocket.randomId = randomId;
  window.RealtimeSocket = RealtimeSocket;
})();
