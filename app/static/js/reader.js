// E-book reader: PDF.js renders one page at a time onto a canvas; the page is remembered.
import * as pdfjs from "/static/vendor/pdfjs/pdf.min.mjs";

const root = document.getElementById("reader");
const canvas = document.getElementById("page-canvas");
const num = document.getElementById("page-num");
const count = document.getElementById("page-count");
const key = root.dataset.resumeKey;
pdfjs.GlobalWorkerOptions.workerSrc = root.dataset.worker;

let doc = null;
let current = 1;
let rendering = null;
let shownAt = 0;

// A page counts as read with the time it was on screen (capped: a tab left open is not reading).
function pageViewed() {
  if (!shownAt || !window.RapportEvents) return;
  const seconds = Math.min((Date.now() - shownAt) / 1000, 600);
  if (seconds >= 1) window.RapportEvents.track("page_viewed", { page: current, seconds: Math.round(seconds * 10) / 10 });
  shownAt = 0;
}
window.addEventListener("pagehide", () => { pageViewed(); if (window.RapportEvents) window.RapportEvents.flush(true); });

function remember() {
  try { localStorage.setItem(key, String(current)); } catch (e) { /* a nicety only */ }
}

async function show(n) {
  if (!doc || n < 1 || n > doc.numPages) return;
  pageViewed();
  current = n;
  if (rendering) { try { rendering.cancel(); } catch (e) { /* already done */ } }
  const page = await doc.getPage(n);
  const width = Math.min(root.clientWidth || 800, 900);
  const base = page.getViewport({ scale: 1 });
  const ratio = window.devicePixelRatio || 1;
  const viewport = page.getViewport({ scale: (width / base.width) * ratio });
  canvas.width = viewport.width;
  canvas.height = viewport.height;
  canvas.style.width = `${viewport.width / ratio}px`;
  rendering = page.render({ canvasContext: canvas.getContext("2d"), viewport });
  try { await rendering.promise; } catch (e) { return; }
  shownAt = Date.now();
  num.textContent = String(n);
  root.dataset.page = String(n);
  remember();
}

document.getElementById("prev-page").addEventListener("click", () => show(current - 1));
document.getElementById("next-page").addEventListener("click", () => show(current + 1));
document.addEventListener("keydown", (event) => {
  if (event.key === "ArrowRight") show(current + 1);
  if (event.key === "ArrowLeft") show(current - 1);
});

pdfjs.getDocument({ url: root.dataset.url, isEvalSupported: false }).promise.then((loaded) => {
  doc = loaded;
  count.textContent = String(doc.numPages);
  let start = 1;
  try { start = parseInt(localStorage.getItem(key) || "1", 10) || 1; } catch (e) { /* ignore */ }
  root.dataset.ready = "true";
  return show(Math.min(Math.max(start, 1), doc.numPages));
}).catch((error) => {
  root.dataset.error = String(error);
  count.textContent = "?";
});
