// The inbox page: list, live additions, mark read, synced across tabs.
(function () {
  "use strict";
  const list = document.getElementById("inbox");
  const older = document.getElementById("older");
  const state = document.getElementById("conn-state");
  const socket = window.notificationSocket;
  const shown = new Map();
  let nextBefore = null;

  function item(n) {
    const li = document.createElement("li");
    li.className = "note level-" + n.level + (n.read ? " read" : " unread");
    li.dataset.id = n.id;
    const title = document.createElement(n.url ? "a" : "strong");
    title.textContent = n.title;
    if (n.url) title.href = n.url;
    const body = document.createElement("p");
    body.textContent = n.body;
    const when = document.createElement("time");
    when.dateTime = n.created_at;
    when.textContent = new Date(n.created_at).toLocaleString();
    const mark = document.createElement("button");
    mark.type = "button";
    mark.className = "mark";
    mark.textContent = "Mark read";
    mark.hidden = n.read;
    mark.addEventListener("click", () => socket.send({ type: "mark_read", ids: [n.id] }));
    li.append(title, when, body, mark);
    return li;
  }

  function add(n, atTop) {
    if (shown.has(n.id)) return;
    const li = item(n);
    shown.set(n.id, li);
    if (atTop) list.prepend(li); else list.append(li);
  }

  function markRead(li) {
    li.classList.remove("unread");
    li.classList.add("read");
    li.querySelector(".mark").hidden = true;
  }

  const initial = JSON.parse(document.getElementById("inbox-initial").textContent);
  initial.results.forEach((n) => add(n, false));
  nextBefore = initial.next_before;
  older.hidden = nextBefore === null;
  older.addEventListener("click", async () => {
    const r = await fetch("/api/notifications/?before=" + nextBefore, { credentials: "same-origin" });
    const page = await r.json();
    page.results.forEach((n) => add(n, false));
    nextBefore = page.next_before;
    older.hidden = nextBefore === null;
  });

  socket.addEventListener("state", (e) => { state.textContent = e.detail; state.dataset.state = e.detail; });
  socket.addEventListener("notification", (e) => add(e.detail.notification, true));
  socket.addEventListener("read", (e) => {
    if (e.detail.all) shown.forEach(markRead);
    else e.detail.ids.forEach((id) => shown.has(id) && markRead(shown.get(id)));
  });
  document.getElementById("mark-all").addEventListener("click", () => socket.send({ type: "mark_all_read" }));
})();
