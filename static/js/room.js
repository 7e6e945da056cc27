// A chat room: history (scroll up for older), live messages, presence, typing, connection state.
// Every piece of user content goes in with textContent, never as HTML.
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("room-config").textContent);
  const pane = document.getElementById("messages-pane");
  const list = document.getElementById("messages");
  const olderButton = document.getElementById("load-older");
  const historyStart = document.getElementById("history-start");
  const errorEl = document.getElementById("room-error");
  const titleEl = document.getElementById("room-title");
  const onlineEl = document.getElementById("online");
  const onlineCount = document.getElementById("online-count");
  const typingEl = document.getElementById("typing");
  const form = document.getElementById("composer");
  const input = document.getElementById("message-input");

  const TYPING_SEND_EVERY = 2000; // ms between our own typing frames
  const TYPING_SHOW_FOR = 3500; // ms a "typing" notice stays up

  const socket = new RealtimeSocket("/ws/chat/" + encodeURIComponent(config.slug) + "/", {
    itemOf: (frame) => (frame.type === "message" ? frame.message : null),
  });
  window.chatSocket = socket;

  const shown = new Map(); // message id -> <li>
  const pendingEls = new Map(); // client_id -> <li> for messages not yet confirmed
  let nextBefore = undefined; // undefined: not asked yet; null: no older messages
  let loadingOlder = false;

  // --- rendering ---------------------------------------------------------------------
  function nearBottom() {
    return pane.scrollHeight - pane.scrollTop - pane.clientHeight < 80;
  }

  function scrollToBottom() {
    pane.scrollTop = pane.scrollHeight;
  }

  function messageEl(m, pending) {
    const li = document.createElement("li");
    li.className = "msg";
    if (m.author === null) li.classList.add("system");
    else if (m.author === config.username) li.classList.add("mine");
    if (pending) li.classList.add("pending");
    if (m.id !== undefined) li.dataset.id = String(m.id);
    if (m.client_id) li.dataset.clientId = m.client_id;
    const meta = document.createElement("div");
    meta.className = "meta";
    const author = document.createElement("span");
    author.className = "author";
    author.textContent = m.author === null ? "system" : m.author;
    const when = document.createElement("time");
    if (pending) {
      when.className = "status";
      when.textContent = socket.state === "open" ? "sending…" : "queued, will send when back online";
    } else {
      when.dateTime = m.created_at;
      when.textContent = new Date(m.created_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      when.title = new Date(m.created_at).toLocaleString();
    }
    meta.append(author, when);
    const body = document.createElement("div");
    body.className = "body";
    body.textContent = m.body;
    li.append(meta, body);
    return li;
  }

  function firstPending() {
    return list.querySelector("li.pending");
  }

  function addMessage(m) {
    // Our own queued copy gives way to the confirmed one.
    if (m.client_id && m.author === config.username && pendingEls.has(m.client_id)) {
      pendingEls.get(m.client_id).remove();
      pendingEls.delete(m.client_id);
    }
    if (shown.has(m.id)) return false;
    const li = messageEl(m, false);
    shown.set(m.id, li);
    // Ascending by id; confirmed messages stay above the ones still pending.
    let before = firstPending();
    for (const other of list.querySelectorAll("li[data-id]")) {
      if (Number(other.dataset.id) > m.id) {
        before = other;
        break;
      }
    }
    list.insertBefore(li, before);
    return true;
  }

  function addLive(messages) {
    const stick = nearBottom();
    let added = false;
    messages.forEach((m) => {
      added = addMessage(m) || added;
    });
    if (added && (stick || messages.some((m) => m.author === config.username))) scrollToBottom();
  }

  function removeMessage(id) {
    shown.get(id)?.remove();
    shown.delete(id);
  }

  function showPending(frame) {
    const li = messageEl({ author: config.username, body: frame.body, client_id: frame.client_id }, true);
    pendingEls.set(frame.client_id, li);
    list.append(li);
    scrollToBottom();
  }

  function refreshPendingLabels() {
    pendingEls.forEach((li) => {
      if (li.classList.contains("failed")) return;
      li.querySelector(".status").textContent =
        socket.state === "open" ? "sending…" : "queued, will send when back online";
    });
  }

  function showError(text) {
    errorEl.textContent = text;
    errorEl.hidden = false;
  }

  // --- history -----------------------------------------------------------------------
  function oldestId() {
    let oldest = null;
    shown.forEach((_, id) => {
      if (oldest === null || id < oldest) oldest = id;
    });
    return oldest;
  }

  function updateHistoryControls() {
    const none = nextBefore === null || shown.size === 0;
    olderButton.hidden = none;
    historyStart.hidden = !none || socket.state === "connecting";
  }

  async function loadOlder() {
    const oldest = oldestId();
    if (loadingOlder || nextBefore === null || oldest === null) return;
    loadingOlder = true;
    olderButton.disabled = true;
    try {
      const url = "/api/chat/rooms/" + encodeURIComponent(config.slug) + "/messages/?before=" + oldest;
      const r = await fetch(url, { credentials: "same-origin" });
      if (!r.ok) return;
      const page = await r.json();
      const fromBottom = pane.scrollHeight - pane.scrollTop;
      page.results.forEach(addMessage);
      pane.scrollTop = pane.scrollHeight - fromBottom; // keep the view where it was
      nextBefore = page.results.length ? page.next_before : null;
    } finally {
      loadingOlder = false;
      olderButton.disabled = false;
      updateHistoryControls();
    }
  }

  pane.addEventListener("scroll", () => {
    if (pane.scrollTop < 40) loadOlder();
  });
  olderButton.addEventListener("click", loadOlder);

  // --- presence -----------------------------------------------------------------------
  // The welcome lists the first `presenceListMax` names online, sorted, and the count;
  // each `presence` frame carries the net `joined` and `left` since the previous one,
  // or, `truncated`, only the count. `names` is always a sorted prefix of everyone
  // online (all of them when `complete`); further names are read over HTTP on demand.
  const onlineMore = document.getElementById("online-more");
  // Frames that arrive while a page is on its way are applied after it, so a page
  // read before a change cannot undo it.
  // `generation` counts welcomes: a page asked for before a reconnect is not used after it.
  const presence = { names: [], count: 0, complete: true, loading: false, queued: [], generation: 0 };
  const PAGE = config.presenceListMax;
  let refreshTimer = null;

  // Code point order, the server's (Redis sorts names as UTF-8 bytes).
  function byName(a, b) {
    for (let i = 0; i < a.length && i < b.length; i++) {
      const d = a.codePointAt(i) - b.codePointAt(i);
      if (d) return d;
    }
    return a.length - b.length;
  }

  function position(name) {
    let lo = 0;
    let hi = presence.names.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (byName(presence.names[mid], name) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  function renderOnline() {
    onlineEl.replaceChildren(
      ...presence.names.map((u) => {
        const li = document.createElement("li");
        li.textContent = u;
        if (u === config.username) li.classList.add("me");
        return li;
      })
    );
    onlineCount.textContent = "(" + presence.count + ")";
    onlineMore.hidden = presence.complete;
    onlineMore.disabled = presence.loading;
    onlineMore.textContent = presence.names.length ? "Show more" : "Show who is online";
  }

  function applyPresence(frame) {
    if (presence.loading) {
      presence.queued.push(frame);
      return;
    }
    presence.count = frame.online_count;
    if (frame.truncated) {
      // Too many changes to name: what is shown may be wrong. Show the count; a room
      // small enough to list whole is read again once the burst is over.
      presence.names = [];
      presence.complete = false;
      if (presence.count <= PAGE) refreshLater();
    } else {
      const last = presence.names[presence.names.length - 1];
      frame.left.forEach((u) => {
        const i = position(u);
        if (presence.names[i] === u) presence.names.splice(i, 1);
      });
      frame.joined.forEach((u) => {
        // Beyond the names loaded so far, a name belongs to a page not read yet.
        if (!presence.complete && (last === undefined || byName(u, last) > 0)) return;
        const i = position(u);
        if (presence.names[i] !== u) presence.names.splice(i, 0, u);
      });
      if (presence.complete && presence.names.length !== presence.count) refreshLater();
    }
    renderOnline();
  }

  function refreshLater() {
    // Every member gets the same truncated frame: wait until the frames stop, then
    // spread the members' reads over a few seconds.
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => loadOnline(true), 2000 + Math.random() * 3000);
  }

  async function loadOnline(fromStart) {
    if (presence.loading) return;
    presence.loading = true;
    const generation = presence.generation;
    renderOnline();
    try {
      const after = fromStart ? null : presence.names[presence.names.length - 1];
      let url = "/api/chat/rooms/" + encodeURIComponent(config.slug) + "/online/?limit=" + PAGE;
      if (after !== undefined && after !== null) url += "&after=" + encodeURIComponent(after);
      const r = await fetch(url, { credentials: "same-origin" });
      if (!r.ok) return;
      const page = await r.json();
      if (generation !== presence.generation) return;
      if (fromStart) presence.names = [];
      page.results.forEach((u) => {
        const i = position(u);
        if (presence.names[i] !== u) presence.names.splice(i, 0, u);
      });
      presence.count = page.online_count;
      presence.complete = page.next_after === null;
    } finally {
      presence.loading = false;
      const queued = presence.queued.splice(0);
      queued.forEach(applyPresence);
      renderOnline();
    }
  }

  onlineMore.addEventListener("click", () => loadOnline(false));

  // --- typing --------------------------------------------------------------------------
  const typers = new Map(); // username -> timeout
  function renderTyping() {
    const names = Array.from(typers.keys());
    if (!names.length) typingEl.textContent = "";
    else if (names.length === 1) typingEl.textContent = names[0] + " is typing…";
    else if (names.length === 2) typingEl.textContent = names[0] + " and " + names[1] + " are typing…";
    else typingEl.textContent = "Several people are typing…";
  }

  function someoneTyping(user) {
    clearTimeout(typers.get(user));
    typers.set(
      user,
      setTimeout(() => {
        typers.delete(user);
        renderTyping();
      }, TYPING_SHOW_FOR)
    );
    renderTyping();
  }

  function stoppedTyping(user) {
    if (!typers.has(user)) return;
    clearTimeout(typers.get(user));
    typers.delete(user);
    renderTyping();
  }

  // --- socket events -----------------------------------------------------------------
  socket.showStateIn(document.getElementById("conn-state"));
  socket.addEventListener("state", refreshPendingLabels);

  socket.addEventListener("welcome", (e) => {
    const w = e.detail;
    errorEl.hidden = true;
    if (w.room) {
      titleEl.textContent = w.room.title || "#" + w.room.slug;
      document.title = (w.room.title || "#" + w.room.slug) + " · Relay";
    }
    const ids = new Set(w.messages.map((m) => m.id));
    if (w.messages.length) {
      // Messages deleted while we were away: gone from the server's recent history.
      const low = Math.min(...ids);
      const high = Math.max(...ids);
      Array.from(shown.keys()).forEach((id) => {
        if (id >= low && id <= high && !ids.has(id)) removeMessage(id);
      });
    }
    const first = shown.size === 0;
    addLive(w.messages);
    if (first) scrollToBottom();
    if (nextBefore === undefined && w.messages.length === 0) nextBefore = null;
    clearTimeout(refreshTimer);
    presence.queued = [];
    presence.generation += 1;
    presence.names = (w.online || []).slice();
    presence.count = w.online_count === undefined ? presence.names.length : w.online_count;
    presence.complete = presence.names.length >= presence.count;
    renderOnline();
    updateHistoryControls();
  });

  socket.addEventListener("message", (e) => {
    const m = e.detail.message;
    if (m.author) stoppedTyping(m.author);
    addLive([m]);
    updateHistoryControls();
  });
  socket.addEventListener("message_deleted", (e) => removeMessage(e.detail.id));
  socket.addEventListener("presence", (e) => applyPresence(e.detail));
  socket.addEventListener("typing", (e) => {
    if (e.detail.user !== config.username) someoneTyping(e.detail.user);
  });
  socket.addEventListener("rejected", (e) => {
    const li = pendingEls.get(e.detail.frame.client_id);
    if (!li) return;
    li.classList.add("failed");
    li.querySelector(".status").textContent = "not sent: " + (e.detail.error.detail || e.detail.error.code);
  });
  socket.addEventListener("closed", (e) => {
    const code = e.detail.code;
    if (code === 4404) showError("There is no room called “" + config.slug + "”.");
    else if (code === 4403) showError("This room is private, and you are not a member.");
    form.querySelectorAll("textarea, button").forEach((el) => (el.disabled = code !== 4401 ? true : el.disabled));
  });

  // --- composing ---------------------------------------------------------------------
  let lastTypingSent = 0;
  input.addEventListener("input", () => {
    const now = Date.now();
    if (input.value.trim() && now - lastTypingSent > TYPING_SEND_EVERY && socket.send({ type: "typing" })) {
      lastTypingSent = now;
    }
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const body = input.value.trim();
    if (!body) return;
    if (body.length > config.maxBody) {
      showError("A message can be at most " + config.maxBody + " characters.");
      return;
    }
    const clientId = RealtimeSocket.randomId();
    showPending({ body, client_id: clientId });
    socket.post({ type: "message", body, client_id: clientId }); // queued while offline, sent once
    input.value = "";
    lastTypingSent = 0;
    input.focus();
  });
})();
