// Author area: reorder modules and lessons with the arrow buttons (saved at once through the
// JSON API), and ask before destructive forms. Without JavaScript the arrows stay hidden.
(function () {
  "use strict";

  function items(list) {
    return Array.prototype.filter.call(list.children, function (el) {
      return el.hasAttribute("data-id");
    });
  }

  function statusFor(list) {
    var next = list.nextElementSibling;
    return next && next.classList.contains("reorder-status") ? next : null;
  }

  function refresh(list) {
    var rows = items(list);
    rows.forEach(function (row, i) {
      var up = row.querySelector(":scope > .move .move-up, :scope > header .move .move-up");
      var down = row.querySelector(":scope > .move .move-down, :scope > header .move .move-down");
      if (up) up.disabled = i === 0;
      if (down) down.disabled = i === rows.length - 1;
      var num = row.querySelector(":scope > header .num");
      if (num) num.textContent = String(i + 1);
    });
  }

  function say(list, ok) {
    var status = statusFor(list);
    if (!status) return;
    status.textContent = ok ? status.dataset.saved : status.dataset.failed;
    status.classList.toggle("ok", ok);
    status.classList.toggle("error", !ok);
  }

  function save(list, before) {
    var ids = items(list).map(function (row) { return Number(row.dataset.id); });
    list.setAttribute("aria-busy", "true");
    fetch(list.dataset.reorder, {
      method: "PUT",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "X-CSRFToken": list.dataset.csrf
      },
      body: JSON.stringify({ ids: ids })
    }).then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
      say(list, true);
    }).catch(function () {
      // The server kept the old order: show it again rather than an order that was not saved.
      before.forEach(function (row) { list.appendChild(row); });
      refresh(list);
      say(list, false);
    }).finally(function () {
      list.removeAttribute("aria-busy");
    });
  }

  function move(button, step) {
    var row = button.closest("[data-id]");
    var list = row && row.parentElement;
    if (!list || !list.dataset.reorder) return;
    var rows = items(list);
    var index = rows.indexOf(row);
    var target = index + step;
    if (target < 0 || target >= rows.length) return;
    var before = rows.slice();
    if (step < 0) list.insertBefore(row, rows[target]);
    else list.insertBefore(row, rows[target].nextSibling);
    refresh(list);
    button.focus();
    save(list, before);
  }

  document.querySelectorAll("[data-reorder]").forEach(function (list) {
    list.querySelectorAll(".move").forEach(function (el) { el.hidden = false; });
    refresh(list);
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest(".move-up, .move-down") : null;
    if (!button) return;
    event.preventDefault();
    move(button, button.classList.contains("move-up") ? -1 : 1);
  });

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
})();
