// The bell in the header: a live unread badge on every page.
(function () {
  "use strict";
  const badge = document.getElementById("bell-badge");
  const socket = new RealtimeSocket("/ws/notifications/");
  window.notificationSocket = socket;
  function show(count) {
    badge.textContent = count > 99 ? "99+" : String(count);
    badge.hidden = count === 0;
    badge.dataset.count = String(count);
  }
  let unread = 0;
  socket.addEventListener("welcome", (e) => { unread = e.detail.unread; show(unread); });
  socket.addEventListener("notification", (e) => {
    socket.seen(e.detail.notification.id);
    if (!e.detail.notification.read) { unread += 1; show(unread); }
  });
  socket.addEventListener("read", (e) => { unread = e.detail.unread; show(unread); });
})();
