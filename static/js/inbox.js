// The inbox page: list, live additions, mark one / all read, synced across tabs by the server's `read` frames.
(function () {
  "use strict";
  const list = document.getElementById("inbox");
  const empty = document.getElementById("inbox-empty");
  const older = document.getElementById("older");
  const summary = document.getElementById("unread-summary");
  const badge = document.getElementById("bell-badge");
  const socket = window.notificationSocket;
  const shown = new Map(); // id -> <li>
  let nextBefore = null;

  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function safeUrl(url) {
    // The server's rule (notifications.services.is_safe_link), for rows stored before it or around it:
    // an absolute http(s) URL, or a path that starts with exactly one "/". No backslash or control
    // character anywhere: a browser reads "/\evil.example", and "/<tab>/evil.example", as "//evil.example":
    // another site. Anything else (javascript:, data:) is shown as text, not a link.
    if (typeof url !== "string" || /[\\\u0000-\u001f\u007f-\u009f]/.test(url)) return null;
    if (url.startsWith("/")) return url.startsWith("//") ? null : url;
    return /^https?:\/\/[^/]/i.test(url) ? url : null;
  }

  function item(n) {
    const li = document.createElement("li");
    li.className = "note level-" + n.level;
    li.dataset.id = String(n.id);
    const head = document.createElement("div");
    head.className = "note-head";
    const href = safeUrl(n.url);
    const title = document.createElement(href ? "a" : "strong");
    title.className = "note-title";
    title.textContent = n.title;
    if (href) title.href = href;
    const when = document.createElement("time");
    when.dateTime = n.created_at;
    when.textContent = new Date(n.created_at).toLocaleString();
    head.append(title, when);
    li.append(head);
    if (n.body) {
      const body = document.createElement("p");
      body.className = "note-body";
      body.textContent = n.body;
      li.append(body);
    }
    const mark = document.createElement("button");
    mark.type = "button";
    mark.className = "mark link";
    mark.textContent = "Mark read";
    mark.addEventListener("click", () => markRead([n.id]));
    li.append(mark);
    setRead(li, n.read);
    return li;
  }

  function setRead(li, read) {
    li.classList.toggle("read", read);
    li.classList.toggle("unread", !read);
    li.querySelector(".mark").hidden = read;
  }

  function add(n) {
    if (shown.has(n.id)) return;
    const li = item(n);
    shown.set(n.id, li);
    // Newest first, whatever order frames arrive in (a replay can follow a newer live item).
    let before = null;
    for (const other of list.children) {
      if (Number(other.dataset.id) < n.id) {
        before = other;
        break;
      }
    }
    list.insertBefore(li, before);
    empty.hidden = true;
  }

  function showUnread(count) {
    summary.textContent = count ? count + " unread" : "All caught up";
  }

  async function post(body) {
    const r = await fetch("/api/notifications/read/", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify(body),
    });
    if (r.ok) showUnread((await r.json()).unread);
  }

  function markRead(ids) {
    // The socket answers every tab with a `read` frame; over HTTP the server does the same.
    if (!socket.send({ type: "mark_read", ids })) post({ ids });
  }

  function markAll() {
    if (!socket.send({ type: "mark_all_read" })) post({ all: true });
  }

  const initial = JSON.parse(document.getElementById("inbox-initial").textContent);
  initial.results.forEach(add);
  // Everything newer than the newest server-rendered item comes through the socket: no gap, no duplicate.
  socket.resumeFrom(initial.results.length ? initial.results[0].id : 0);
  socket.markDelivered(initial.results.map((n) => n.id));
  nextBefore = initial.next_before;
  older.hidden = nextBefore === null;
  empty.hidden = shown.size > 0;
  showUnread(Number(badge.dataset.count || 0));

  older.addEventListener("click", async () => {
    older.disabled = true;
    try {
      const r = await fetch("/api/notifications/?before=" + nextBefore, { credentials: "same-origin" });
      if (!r.ok) return;
      const page = await r.json();
      page.results.forEach(add);
      nextBefore = page.next_before;
      older.hidden = nextBefore === null;
    } finally {
      older.disabled = false;
    }
  });
  document.getElementById("mark-all").addEventListener("click", markAll);

  socket.showStateIn(document.getElementById("conn-state"));
  socket.addEventListener("welcome", (e) => showUnread(e.detail.unread));
  socket.addEventListener("notification", (e) => {
    add(e.detail.notification);
    showUnread(Number(badge.dataset.count || 0));
  });
  socket.addEventListener("read", (e) => {
    if (e.detail.all) shown.forEach((li) => setRead(li, true));
    else e.detail.ids.forEach((id) => shown.has(id) && setRead(shown.get(id), true));
    showUnread(e.detail.unread);
  });
})();
