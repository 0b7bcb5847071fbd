// Driftwood's web UI: draws each chart from the table of numbers beside it, so the chart and
// the table can never disagree. A chart is a <figure class="chart"> holding a .plot element
// and a <table>: the first column is x, every other column a series; a cell's data-v (or its
// text) is the value, an empty cell a gap. data-x="time" reads x as Unix seconds;
// data-threshold="0.2,0.5" draws dashed threshold lines. Pages work without this file.
(function () {
  "use strict";
  var palette = ["#0b57b7", "#c2410c", "#1a7f37", "#8250df", "#b0186b", "#0f766e", "#9a6700",
    "#57606a", "#cf222e", "#1f6feb"];

  function num(cell) {
    var raw = cell.hasAttribute("data-v") ? cell.getAttribute("data-v") : cell.textContent;
    if (raw === null || raw.trim() === "") return null;
    var v = parseFloat(raw);
    return isFinite(v) ? v : null;
  }

  function draw(figure) {
    var table = figure.querySelector("table");
    var plot = figure.querySelector(".plot");
    if (!table || !plot || typeof uPlot === "undefined") return;
    var names = Array.prototype.map.call(table.querySelectorAll("thead th"), function (th) {
      return th.textContent.trim();
    });
    var rows = table.querySelectorAll("tbody tr");
    if (names.length < 2 || rows.length === 0) return;
    var data = names.map(function () { return []; });
    Array.prototype.forEach.call(rows, function (tr) {
      var cells = tr.querySelectorAll("td, th");
      for (var i = 0; i < names.length; i++) data[i].push(cells[i] ? num(cells[i]) : null);
    });
    var series = [{ label: names[0] }];
    for (var i = 1; i < names.length; i++) {
      series.push({ label: names[i], stroke: palette[(i - 1) % palette.length], width: 1.5, spanGaps: true });
    }
    var thresholds = (figure.getAttribute("data-threshold") || "").split(",").filter(function (t) {
      return t.trim() !== "" && isFinite(parseFloat(t));
    });
    thresholds.forEach(function (t) {
      var v = parseFloat(t);
      data.push(data[0].map(function () { return v; }));
      series.push({ label: "threshold " + v, stroke: "#a4161a", dash: [6, 4], width: 1, points: { show: false } });
    });
    var width = Math.max(320, Math.min(figure.clientWidth || 800, 1100));
    var opts = {
      width: width,
      height: parseInt(figure.getAttribute("data-height") || "260", 10),
      scales: { x: { time: figure.getAttribute("data-x") === "time" } },
      series: series,
      axes: [{}, {}],
    };
    plot.textContent = "";
    new uPlot(opts, data, plot);
  }

  function drawAll(root) {
    Array.prototype.forEach.call((root || document).querySelectorAll("figure.chart"), draw);
  }

  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  // htmx swaps in fresh numbers on live pages: redraw what it swapped.
  document.addEventListener("htmx:afterSettle", function (e) { drawAll(e.target); });
})();
