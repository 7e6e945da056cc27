// One reconnecting socket per endpoint. No framework, no build step.
// Resumes from the last id it saw, backs off with full jitter, and stops
// retrying when the server says the user is not allowed (4401/4403/4404).
(function () {
  "use strict";
  const FINAL = new Set([4401, 4403, 4404]);

  class RealtimeSocket extends EventTarget {
    constructor(path, options = {}) {
      super();
      this.path = path;
      this.baseDelay = options.baseDelay || 500;
      this.maxDelay = options.maxDelay || 30000;
      this.pingEvery = options.pingEvery || 15000;
      this.lastId = null;   // resume point: everything <= lastId was seen
      this.synced = false;  // true once a replay finished on this connection
      this.attempt = 0;
      this.state = "connecting";
      this.outbox = [];
      this.connect();
    }

    url() {
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      return scheme + "//" + location.host + this.path;
    }

    setState(state) {
      if (this.state === state) return;
      this.state = state;
      this.dispatchEvent(new CustomEvent("state", { detail: state }));
    }

    connect() {
      this.setState(this.attempt ? "reconnecting" : "connecting");
      const ws = new WebSocket(this.url());
      this.ws = ws;
      this.synced = false;
      ws.onmessage = (e) => this.onFrame(JSON.parse(e.data));
      ws.onclose = (e) => this.onClose(e);
      ws.onopen = () => { this.attempt = 0; this.startPing(); };
    }

    startPing() {
      clearInterval(this.pinger);
      this.lastPong = Date.now();
      this.pinger = setInterval(() => {
        if (Date.now() - this.lastPong > 2 * this.pingEvery) { this.ws.close(); return; }
        this.send({ type: "ping" });
      }, this.pingEvery);
    }

    onFrame(frame) {
      this.lastPong = Date.now();
      if (frame.type === "welcome") {
        this.setState("open");
        if (this.lastId === null) {
          this.lastId = frame.last_id !== undefined ? frame.last_id : null;
          this.synced = true;
        }
        this.dispatchEvent(new CustomEvent("welcome", { detail: frame }));
        if (!this.synced) this.send({ type: "resume", after: this.lastId || 0 });
        this.flush();
        return;
      }
      if (frame.type === "replay_done") {
        if (frame.last_id !== null) this.lastId = frame.last_id;
        if (frame.more) this.send({ type: "resume", after: this.lastId || 0 });
        else this.synced = true;
      }
      this.dispatchEvent(new CustomEvent(frame.type, { detail: frame }));
    }

    seen(id) {
      // Live frames advance the resume point only once caught up.
      if (this.synced && (this.lastId === null || id > this.lastId)) this.lastId = id;
    }

    onClose(e) {
      clearInterval(this.pinger);
      if (FINAL.has(e.code)) {
        this.setState("offline");
        if (e.code === 4401) location.href = "/accounts/login/?next=" + encodeURIComponent(location.pathname);
        return;
      }
      this.attempt += 1;
      this.setState("reconnecting");
      const cap = Math.min(this.maxDelay, this.baseDelay * 2 ** this.attempt);
      const delay = e.code === 1012 ? Math.random() * this.baseDelay : Math.random() * cap;
      setTimeout(() => this.connect(), delay);
    }

    send(frame) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) { this.ws.send(JSON.stringify(frame)); return true; }
      return false;
    }

    queue(frame) { this.outbox.push(frame); this.flush(); }

    flush() {
      while (this.outbox.length && this.state === "open" && this.send(this.outbox[0])) this.outbox.shift();
    }
  }

  window.RealtimeSocket = RealtimeSocket;
})();
