// Lesson player: playback speed, and resume where the viewer left off (kept in this browser).
(function () {
  "use strict";
  var video = document.getElementById("player");
  if (!video) return;
  var key = video.dataset.resumeKey;
  // HLS where the lesson has a rendition: natively where the browser plays it, else with
  // hls.js; the MP4 in src stays the fallback for everything else.
  var hlsUrl = video.dataset.hls;
  var mp4 = video.getAttribute("src");
  if (hlsUrl) {
    if (video.canPlayType("application/vnd.apple.mpegurl")) {
      video.src = hlsUrl;
      video.dataset.playing = "hls";
    } else if (window.Hls && window.Hls.isSupported()) {
      var hls = new window.Hls();
      hls.loadSource(hlsUrl);
      hls.attachMedia(video);
      video.dataset.playing = "hls.js";
      hls.on(window.Hls.Events.ERROR, function (_event, data) {
        // A broken rendition must not stop the lesson: back to the MP4.
        if (data.fatal) { hls.destroy(); video.src = mp4; video.dataset.playing = "mp4"; }
      });
    }
  }
  var speed = document.getElementById("speed");
  var note = document.getElementById("resume-note");

  function saved() {
    // This browser's own position first; else where the server last saw this buyer (another device).
    var here = null;
    try { here = localStorage.getItem(key); } catch (e) { /* storage may be off */ }
    return parseFloat(here || video.dataset.position || "0") || 0;
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
  // Watched stretches for engagement: continuous playback only, so a seek is not watching.
  var segStart = null;
  var last = 0;
  var rate = 1;
  function r2(x) { return Math.round(x * 100) / 100; }
  function open() { segStart = video.currentTime; last = segStart; rate = video.playbackRate || 1; }
  function close(at) {
    if (segStart !== null && at - segStart >= 0.25 && window.RapportEvents) {
      window.RapportEvents.track("video_progress", { start: r2(segStart), end: r2(at), rate: rate });
    }
    segStart = null;
  }
  video.addEventListener("playing", open);
  video.addEventListener("timeupdate", function () {
    if (segStart === null || video.seeking) return;
    var t = video.currentTime;
    if (t < last || t - last > 3) { close(last); segStart = t; }
    last = t;
    if (last - segStart >= 10) { close(last); open(); }
  });
  video.addEventListener("seeking", function () { close(last); });
  video.addEventListener("seeked", function () { if (!video.paused) open(); });
  video.addEventListener("pause", function () { close(video.currentTime); });
  video.addEventListener("ended", function () {
    close(video.duration || video.currentTime);
    if (window.RapportEvents) window.RapportEvents.flush();
  });
  video.addEventListener("ratechange", function () {
    if (segStart !== null) { close(video.currentTime); open(); }
  });
  function leave() {
    if (segStart !== null) { close(video.currentTime); if (!video.paused) open(); }
    if (window.RapportEvents) window.RapportEvents.flush(true);
  }
  window.addEventListener("pagehide", leave);
  document.addEventListener("visibilitychange", function () { if (document.visibilityState === "hidden") leave(); });

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
