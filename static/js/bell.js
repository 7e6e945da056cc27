// The bell in the header: a live unread badge on every page, and the socket's state.
(function () {
  "use strict";
  const badge = document.getElementById("bell-badge");
  const bell = document.getElementById("bell");
  const live = document.getElementById("live-state");
  const socket = new RealtimeSocket("/ws/notifications/", {
    itemOf: (frame) => (frame.type === "notification" ? frame.notification : null),
  });
  window.notificationSocket = socket;
  let unread = Number(badge.dataset.count || 0);

  function show(count) {
    unread = Math.max(0, count);
    badge.textContent = unread > 99 ? "99+" : String(unread);
    badge.hidden = unread === 0;
    badge.dataset.count = String(unread);
    bell.setAttribute("aria-label", unread ? "Notifications, " + unread + " unread" : "Notifications");
  }
  show(unread);

  socket.addEventListener("welcome", (e) => show(e.detail.unread));
  socket.addEventListener("notification", (e) => {
    const n = e.detail.notification;
    // welcome.unread already counts everything up to welcome.last_id; a replay only fills the list.
    if (!n.read && n.id > socket.welcomeLastId) show(unread + 1);
  });
  socket.addEventListener("read", (e) => show(e.detail.unread));
  socket.addEventListener("state", (e) => {
    live.dataset.state = e.detail;
    live.title = "Live updates: " + e.detail;
  });
})();
