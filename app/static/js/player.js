// Lesson player: playback speed, and resume where the viewer left off (kept in this browser).
(function () {
  "use strict";
  var video = document.getElementById("player");
  if (!video) return;
  var key = video.dataset.resumeKey;
  var speed = document.getElementById("speed");
  var note = document.getElementById("resume-note");

  function saved() {
    try { return parseFloat(localStorage.getItem(key) || "0") || 0; } catch (e) { return 0; }
  }
  function save() {
    try {
      if (video.duration && video.currentTime > video.duration - 2) localStorage.removeItem(key);
      else if (video.currentTime > 0) localStorage.setItem(key, String(video.currentTime));
    } catch (e) { /* storage may be off: resuming is a nicety */ }
  }

  video.addEventListener("loadedmetadata", function () {
    var at = saved();
    if (at > 1 && (!video.duration || at < video.duration - 1)) {
      video.currentTime = at;
      if (note) note.hidden = false;
    }
  });
  video.addEventListener("timeupdate", function () {
    if (!video._lastSave || Math.abs(video.currentTime - video._lastSave) >= 1) {
      video._lastSave = video.currentTime;
      save();
    }
  });
  video.addEventListener("pause", save);
  window.addEventListener("pagehide", save);
  if (speed) {
    try { speed.value = localStorage.getItem("rapport:speed") || "1"; } catch (e) { /* ignore */ }
    video.playbackRate = parseFloat(speed.value) || 1;
    speed.addEventListener("change", function () {
      video.playbackRate = parseFloat(speed.value) || 1;
      try { localStorage.setItem("rapport:speed", speed.value); } catch (e) { /* ignore */ }
    });
    video.addEventListener("loadedmetadata", function () { video.playbackRate = parseFloat(speed.value) || 1; });
  }
})();
