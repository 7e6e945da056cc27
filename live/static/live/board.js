// The /live/ board: subscribes to the demo topics on /ws/live/ and updates each row in place.
// After every (re)connect it subscribes again, and the `subscribed` frames bring the latest prices.
(function () {
  "use strict";

  const MAX_PER_FRAME = 100; // topics in one subscribe frame (docs/protocol.md)
  const config = JSON.parse(document.getElementById("live-config").textContent);
  const pill = document.getElementById("conn-state");
  const rows = new Map();
  document.querySelectorAll("#board tr[data-topic]").forEach((tr) => {
    rows.set(tr.dataset.topic, {
      tr: tr,
      price: tr.querySelector(".price"),
      change: tr.querySelector(".change"),
      seq: tr.querySelector(".seq"),
      last: null,
    });
  });

  function show(frame, fresh) {
    const row = rows.get(frame.topic);
    if (!row) return;
    // The server never sends an older value after a newer one; a `subscribed` starts afresh.
    if (!fresh && row.last !== null && frame.seq !== null && frame.seq <= row.last) return;
    row.last = frame.seq;
    row.tr.dataset.seq = frame.seq === null ? "" : String(frame.seq);
    row.seq.textContent = frame.seq === null ? "" : String(frame.seq);
    const quote = frame.data;
    if (!quote || typeof quote.price !== "number") {
      row.price.textContent = "–";
      row.change.textContent = "";
      return;
    }
    const change = typeof quote.change === "number" ? quote.change : 0;
    row.price.textContent = quote.price.toFixed(2);
    row.change.textContent = (change > 0 ? "+" : "") + change.toFixed(2);
    row.change.className = "num change " + (change > 0 ? "up" : change < 0 ? "down" : "");
    if (!fresh && change !== 0) {
      row.tr.classList.remove("flash-up", "flash-down");
      void row.tr.offsetWidth; // restart the animation
      row.tr.classList.add(change > 0 ? "flash-up" : "flash-down");
    }
  }

  const socket = new RealtimeSocket("/ws/live/", { openOnConnect: true, redirectOnAuthFailure: false });
  window.liveSocket = socket;
  socket.showStateIn(pill);
  socket.addEventListener("open", () => {
    for (let i = 0; i < config.topics.length; i += MAX_PER_FRAME) {
      socket.send({ type: "subscribe", topics: config.topics.slice(i, i + MAX_PER_FRAME) });
    }
  });
  // Logged out in another tab (4401): the board is public, so start again as a visitor.
  socket.addEventListener("closed", (e) => {
    if (e.detail.code === 4401) location.reload();
  });
  socket.addEventListener("subscribed", (e) => show(e.detail, true));
  socket.addEventListener("update", (e) => show(e.detail, false));
})();
