// Draws the dashboard's charts from the JSON block the page carries (no inline script: CSP).
(function () {
  "use strict";

  function draw() {
    var source = document.getElementById("dashboard-data");
    if (!source || typeof window.Chart === "undefined") return;
    var data = JSON.parse(source.textContent || "{}");
    var Chart = window.Chart;
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    Chart.defaults.color = "#5a6577";
    // Drawn at once: the numbers are what matters, and screenshots see finished charts.
    Chart.defaults.animation = false;

    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var spec = data[canvas.dataset.chart];
      if (!spec || !spec.labels || spec.labels.length === 0) return;
      var config = canvas.dataset.chart === "funnel" ? funnel(spec) : grouped(spec);
      new Chart(canvas, config);
      canvas.dataset.drawn = "true";
    });
    document.body.dataset.chartsDrawn = "true";
  }

  function funnel(spec) {
    var set = spec.datasets[0];
    return {
      type: "bar",
      data: {
        labels: spec.labels,
        datasets: [{ label: set.label, data: set.data, backgroundColor: set.colors, borderRadius: 6 }],
      },
      options: {
        indexAxis: "y",
        responsive: true,
        maintainAspectRatio: false,
        plugins: { legend: { display: false } },
        // Logarithmic: visitors outnumber clients by orders of magnitude.
        scales: { x: { type: "logarithmic", min: 0.8, ticks: { callback: wholeTicks } } },
      },
    };
  }

  function grouped(spec) {
    return {
      type: "bar",
      data: {
        labels: spec.labels,
        datasets: spec.datasets.map(function (set) {
          return { label: set.label, data: set.data, backgroundColor: set.color, borderRadius: 4 };
        }),
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
        scales: { y: { beginAtZero: true, ticks: { precision: 0 } } },
      },
    };
  }

  function wholeTicks(value) {
    var log = Math.log10(value);
    return Number.isInteger(log) ? Number(value).toLocaleString(document.documentElement.lang) : "";
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
