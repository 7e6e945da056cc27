// The rooms list, from GET /api/chat/rooms/.
(function () {
  "use strict";
  const list = document.getElementById("rooms");
  const status = document.getElementById("rooms-status");

  function row(room) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.className = "room-link";
    a.href = "/chat/" + encodeURIComponent(room.slug) + "/";
    a.dataset.slug = room.slug;
    const title = document.createElement("span");
    title.className = "room-title";
    title.textContent = room.title || room.slug;
    const slug = document.createElement("span");
    slug.className = "muted";
    slug.textContent = "#" + room.slug;
    a.append(title, slug);
    if (room.private) {
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = "private";
      a.append(tag);
    }
    li.append(a);
    return li;
  }

  fetch("/api/chat/rooms/", { credentials: "same-origin" })
    .then((r) => (r.ok ? r.json() : Promise.reject(new Error(String(r.status)))))
    .then((data) => {
      data.results.forEach((room) => list.append(row(room)));
      status.textContent = data.results.length ? "" : "No rooms yet. An admin can create one.";
      status.hidden = data.results.length > 0;
    })
    .catch(() => {
      status.textContent = "Could not load the rooms. Reload the page to try again.";
      status.classList.add("error");
    });
})();
