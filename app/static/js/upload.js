// A lesson's file upload: straight to the bucket in presigned parts (3 at a time) in S3 mode,
// in chunks to the app in local mode. Each part is tried 3 times with backoff; then the page
// says so and offers to resume. The upload's id is kept by the server (per lesson) and in
// localStorage, so a reload resumes too: parts the store has are listed and skipped.
(function () {
  "use strict";
  var root = document.getElementById("upload");
  var textNode = document.getElementById("upload-text");
  if (!root || !textNode) return;
  var T = JSON.parse(textNode.textContent);
  var API = "/api/v1/author";
  var PARALLEL = 3, TRIES = 3, BACKOFF_MS = 1000, POLL_MS = 1000;
  var lessonId = Number(root.dataset.lessonId);
  var csrf = root.dataset.csrf || "";
  var storeKey = "rapport:upload:lesson:" + lessonId;
  var input = document.getElementById("upload-file");
  var bar = document.getElementById("upload-progress");
  var line = document.getElementById("upload-line");
  var message = document.getElementById("upload-message");
  var resumeButton = document.getElementById("upload-resume");
  var cancelButton = document.getElementById("upload-cancel");
  var current = document.getElementById("upload-current");
  var media = null; // GET /lessons/{id}/media: the lesson's file and its unfinished upload
  var file = null; // the File being sent, kept for the resume button
  var pending = null; // the server's view of the unfinished upload
  var busy = false;

  function fmt(template, values) {
    return template.replace(/%\((\w+)\)s|%%/g, function (all, name) {
      return name ? String(values[name]) : "%";
    });
  }
  function mb(n) { return (n / 1048576).toFixed(1); }
  function size(n) { return n < 1048576 ? Math.ceil(n / 1024) + " KB" : mb(n) + " MB"; }
  function clock(seconds) {
    var s = Math.round(seconds), m = Math.floor(s / 60);
    return m + ":" + String(s % 60).padStart(2, "0");
  }
  function show(el, on) { el.hidden = !on; }
  function say(text) { line.textContent = text; }
  function alertText(text, isError) {
    message.textContent = text;
    message.classList.toggle("error", !!isError);
    show(message, !!text);
  }
  function setProgress(done, total) {
    show(bar, true);
    var percent = total ? Math.min(100, Math.floor((done / total) * 100)) : 0;
    bar.value = percent;
    bar.dataset.bytes = String(done);
    say(fmt(T.progress, { done: mb(done), total: mb(total), percent: percent }));
  }

  // Remembering the upload in this browser (the server remembers it per lesson too).
  function remembered() {
    try { return JSON.parse(localStorage.getItem(storeKey) || "null"); } catch (e) { return null; }
  }
  function remember(upload, f) {
    try {
      localStorage.setItem(storeKey, JSON.stringify({ id: upload.id, name: f.name, size: f.size, modified: f.lastModified }));
    } catch (e) { /* storage off: the server's record still allows resuming */ }
  }
  function forget() { try { localStorage.removeItem(storeKey); } catch (e) { /* ignore */ } }

  function failure(status, detail, data) {
    var error = new Error(detail || T.no_connection);
    error.status = status;
    error.data = data || {};
    return error;
  }

  function api(method, path, body) {
    var options = {
      method: method,
      credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRFToken": csrf },
    };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(API + path, options).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) throw failure(response.status, typeof data.detail === "string" ? data.detail : response.statusText, data);
        return data;
      });
    }, function () { throw failure(0); });
  }

  // XMLHttpRequest rather than fetch: it reports upload progress.
  function put(url, blob, headers, onProgress) {
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      xhr.open("PUT", url);
      Object.keys(headers).forEach(function (name) { xhr.setRequestHeader(name, headers[name]); });
      xhr.upload.onprogress = function (event) { onProgress(event.loaded); };
      xhr.onload = function () {
        var data = {};
        try { data = JSON.parse(xhr.responseText || "{}"); } catch (e) { /* S3 answers XML */ }
        if (xhr.status >= 200 && xhr.status < 300) resolve(data);
        else reject(failure(xhr.status, typeof data.detail === "string" ? data.detail : xhr.statusText, data));
      };
      xhr.onerror = xhr.onabort = xhr.ontimeout = function () { reject(failure(0)); };
      xhr.send(blob);
    });
  }

  function sleep(ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); }

  // Up to TRIES attempts with backoff; a refusal that cannot change (4xx) is not retried.
  async function retrying(attempt) {
    for (var n = 1; ; n++) {
      try {
        return await attempt();
      } catch (error) {
        var final = error.status >= 400 && error.status < 500 && [403, 408, 409, 429].indexOf(error.status) < 0;
        if (n >= TRIES || final) throw error;
        await sleep(BACKOFF_MS * Math.pow(2, n - 1));
      }
    }
  }

  async function headOf(f) {
    var bytes = new Uint8Array(await f.slice(0, 64).arrayBuffer());
    var text = "";
    bytes.forEach(function (b) { text += String.fromCharCode(b); });
    return btoa(text);
  }

  async function sendParts(upload, f) {
    var had = await retrying(function () { return api("GET", "/uploads/" + upload.id + "/parts"); });
    var stored = {};
    had.parts.forEach(function (p) { stored[p.part_number] = true; });
    var todo = [];
    for (var n = 1; n <= upload.parts; n++) if (!stored[n]) todo.push(n);
    var done = had.received, moving = {}, next = 0, stopped = false;
    function report() {
      var sum = done;
      Object.keys(moving).forEach(function (k) { sum += moving[k]; });
      setProgress(sum, f.size);
    }
    report();
    async function worker() {
      while (!stopped && next < todo.length) {
        var number = todo[next++];
        var start = (number - 1) * upload.part_size;
        var blob = f.slice(start, Math.min(start + upload.part_size, f.size));
        await retrying(async function () {
          if (stopped) throw failure(0); // another part gave up: stop with it
          // A fresh presigned URL for each try: an expired one is simply replaced.
          var urls = await api("POST", "/uploads/" + upload.id + "/parts", { part_numbers: [number] });
          moving[number] = 0;
          try {
            await put(urls.urls[0].url, blob, {}, function (loaded) { moving[number] = loaded; report(); });
          } finally {
            delete moving[number];
          }
        });
        done += blob.size;
        report();
      }
    }
    var workers = [];
    for (var w = 0; w < PARALLEL; w++) {
      workers.push(worker().catch(function (error) { stopped = true; throw error; }));
    }
    // Settle all before reporting: no part is still on its way when "resume" is offered.
    var results = await Promise.allSettled(workers);
    results.forEach(function (r) { if (r.status === "rejected") throw r.reason; });
  }

  async function sendChunks(upload, f) {
    var base = "/uploads/" + upload.id;
    var had = await retrying(function () { return api("GET", base + "/parts"); });
    var offset = had.received;
    setProgress(offset, f.size);
    while (offset < f.size) {
      var at = offset, end = Math.min(at + upload.part_size, f.size);
      offset = await retrying(async function () {
        try {
          var sent = await put(API + base + "/chunk?offset=" + at, f.slice(at, end),
            { "Content-Type": "application/octet-stream", "X-CSRFToken": csrf },
            function (loaded) { setProgress(at + loaded, f.size); });
          return sent.received;
        } catch (error) {
          if (error.status === 0 || error.status === 409) { // cut off: where is the server?
            var now = (await api("GET", base + "/parts")).received;
            if (now !== at) return now;
          }
          throw error;
        }
      });
      setProgress(offset, f.size);
    }
  }

  function explain(error) {
    if (error.status === 413) return fmt(T.too_large, { limit: mb(error.data.limit || (media && media.max_size) || 0) });
    if (error.status === 415) return fmt(T.wrong_type, { types: (media ? media.accept : []).join(", ") });
    return fmt(T.stopped, { reason: error.message });
  }

  async function upload(f) {
    if (busy) return;
    busy = true;
    root.dataset.state = "uploading";
    file = f;
    alertText("");
    show(resumeButton, false);
    try {
      var saved = remembered();
      var up = pending && pending.status === "uploading" ? pending : null;
      if (up) {
        // The same file again (name, size and, when this browser saw it, its date) resumes.
        var same = up.filename === f.name && up.size === f.size &&
          (!saved || saved.id !== up.id || saved.modified === f.lastModified);
        if (!same) {
          alertText(fmt(T.other_file, { name: up.filename }));
          show(cancelButton, true);
          return;
        }
      } else {
        up = await api("POST", "/uploads", {
          kind: media.upload_kind, filename: f.name, size: f.size, head: await headOf(f), lesson_id: lessonId,
        });
      }
      pending = up;
      remember(up, f);
      show(cancelButton, false);
      say(fmt(T.uploading, { name: f.name }));
      if (up.status === "uploading") {
        if (up.mode === "s3") await sendParts(up, f);
        else await sendChunks(up, f);
        up = await retrying(function () { return api("POST", "/uploads/" + pending.id + "/complete"); });
      }
      await watch(up);
    } catch (error) {
      alertText(explain(error), true);
      if (error.status === 413 || error.status === 415) {
        forget(); // refused before any byte: there is nothing to resume
      } else {
        show(resumeButton, true);
        show(cancelButton, !!pending);
      }
    } finally {
      busy = false;
      input.value = "";
    }
  }

  async function watch(status) {
    show(bar, true);
    while (status.status === "processing") {
      bar.removeAttribute("value"); // indeterminate while the job runs
      say(fmt(T.processing, { name: status.filename }));
      await sleep(POLL_MS);
      status = await api("GET", "/uploads/" + status.id);
    }
    forget();
    pending = null;
    show(bar, false);
    if (status.status === "ready") {
      await refresh();
      say(fmt(T.ready, { name: status.filename }));
      root.dataset.state = "ready"; // an upload just finished (tests wait for this)
    } else {
      say("");
      alertText(fmt(T.failed, { name: status.filename, reason: status.reason }), true);
      root.dataset.state = "failed";
    }
  }

  function describe(asset) {
    var box = document.createElement("div");
    box.className = "file-box upload-file";
    if (asset.poster_url) {
      box.classList.add("with-poster");
      var img = document.createElement("img");
      img.src = asset.poster_url;
      img.alt = T.poster;
      img.className = "upload-poster";
      box.appendChild(img);
    }
    var name = document.createElement("p");
    var strong = document.createElement("strong");
    strong.textContent = asset.filename;
    name.appendChild(strong);
    var facts = [asset.content_type, size(asset.size), T["status_" + asset.status] || asset.status];
    if (asset.duration_seconds) facts.push(fmt(T.duration, { time: clock(asset.duration_seconds) }));
    if (asset.page_count) facts.push(fmt(T.pages, { count: asset.page_count }));
    var meta = document.createElement("p");
    meta.className = "muted small";
    meta.textContent = facts.join(" · ");
    box.appendChild(name);
    box.appendChild(meta);
    if (asset.note) {
      var note = document.createElement("p");
      note.className = "small upload-note";
      note.textContent = asset.note;
      box.appendChild(note);
    }
    return box;
  }

  function renderCurrent() {
    current.textContent = "";
    var heading = document.createElement("p");
    heading.className = "small muted";
    heading.textContent = T.current;
    current.appendChild(heading);
    if (media.current) current.appendChild(describe(media.current));
    else {
      var none = document.createElement("p");
      none.textContent = T.none;
      current.appendChild(none);
    }
  }

  async function refresh() {
    media = await api("GET", "/lessons/" + lessonId + "/media");
    renderCurrent();
    pending = media.upload;
    root.dataset.state = pending ? pending.status : "idle";
    return media;
  }

  async function init() {
    try {
      await refresh();
    } catch (error) {
      alertText(explain(error), true);
      return;
    }
    if (!pending) return;
    if (pending.status === "uploading") {
      var had = { received: 0 };
      try { had = await api("GET", "/uploads/" + pending.id + "/parts"); } catch (e) { /* shown as 0 % */ }
      show(bar, true);
      bar.value = Math.floor((had.received / pending.size) * 100);
      alertText(fmt(T.interrupted, { name: pending.filename, percent: bar.value }));
      show(cancelButton, true);
    } else if (pending.status === "processing") {
      busy = true;
      try { await watch(pending); } finally { busy = false; }
    } else if (pending.status === "failed") {
      alertText(fmt(T.failed, { name: pending.filename, reason: pending.reason }), true);
    }
  }

  input.addEventListener("change", function () {
    if (input.files && input.files[0] && media) upload(input.files[0]);
  });
  resumeButton.addEventListener("click", function () {
    if (file) upload(file);
    else input.click();
  });
  cancelButton.addEventListener("click", async function () {
    if (!pending || busy) return;
    try {
      await api("DELETE", "/uploads/" + pending.id);
    } catch (error) {
      if (error.status !== 404) { alertText(explain(error), true); return; }
    }
    forget();
    pending = null;
    file = null;
    show(cancelButton, false);
    show(resumeButton, false);
    show(bar, false);
    say("");
    alertText(T.cancelled);
    await refresh();
  });

  init();
})();
