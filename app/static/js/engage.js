// Engagement events: queued in this browser until the server has confirmed them (202), sent
// in batches with fetch keepalive so that the last batch survives leaving the page. Each event
// has a random id: a batch sent twice (a retry after a timeout) is stored once.
(function () {
  "use strict";
  var root = document.querySelector("[data-events-url]");
  if (!root || !window.fetch) return;
  var url = root.dataset.eventsUrl;
  var csrf = root.dataset.csrf;
  var lessonId = parseInt(root.dataset.lessonId, 10);
  var storeKey = "rapport:events";
  var MAX_BATCH = 50;
  var sending = false;

  function load() {
    try { return JSON.parse(localStorage.getItem(storeKey) || "[]"); } catch (e) { return []; }
  }
  var queue = load();
  function keep() {
    try { localStorage.setItem(storeKey, JSON.stringify(queue.slice(-500))); } catch (e) { /* memory only */ }
  }
  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "10000000-1000-4000-8000-100000000000".replace(/[018]/g, function (c) {
      return (c ^ (crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (c / 4)))).toString(16);
    });
  }

  function track(kind, fields) {
    var ev = { id: uuid(), kind: kind, lesson_id: lessonId, at: new Date().toISOString() };
    for (var k in fields || {}) ev[k] = fields[k];
    queue.push(ev);
    keep();
    if (queue.length >= MAX_BATCH) flush();
  }

  function flush(leaving) {
    if (!queue.length || (sending && !leaving)) return;
    var batch = queue.slice(0, MAX_BATCH);
    sending = true;
    fetch(url, {
      method: "POST",
      keepalive: !!leaving,
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrftoken": csrf, "accept": "application/json" },
      body: JSON.stringify({ events: batch })
    }).then(function (r) {
      // 202: stored, duplicates and rejections alike are settled; 4xx other than 429: the
      // batch will never be taken, so it is dropped rather than retried forever.
      var settled = r.status === 202 || (r.status >= 400 && r.status < 500 && r.status !== 429 && r.status !== 401);
      if (settled) {
        var sent = {};
        batch.forEach(function (e) { sent[e.id] = true; });
        queue = queue.filter(function (e) { return !sent[e.id]; });
        keep();
      }
      return r.status === 202 ? r.json() : null;
    }).then(function (body) {
      if (body && body.engaged) document.dispatchEvent(new CustomEvent("rapport:engaged"));
      root.dataset.eventsSent = String((parseInt(root.dataset.eventsSent || "0", 10) || 0) + (body ? body.accepted : 0));
    }).catch(function () { /* offline or server away: the queue is kept and retried */ })
      .then(function () {
        sending = false;
        if (queue.length >= MAX_BATCH) flush();
      });
  }

  setInterval(flush, 10000);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") flush(true);
  });
  window.addEventListener("pagehide", function () { flush(true); });
  window.RapportEvents = { track: track, flush: flush };
  document.addEventListener("rapport:engaged", function () {
    var invitation = document.getElementById("invitation");
    if (invitation) invitation.hidden = false;
  });
  track("lesson_opened");

  // Text lessons count as done when their end has been on screen.
  var end = document.getElementById("lesson-end");
  if (end && root.dataset.lessonKind === "text" && "IntersectionObserver" in window) {
    var seen = new IntersectionObserver(function (entries) {
      if (entries.some(function (e) { return e.isIntersecting; })) {
        seen.disconnect();
        track("lesson_completed");
        flush();
      }
    });
    seen.observe(end);
  }
})();
