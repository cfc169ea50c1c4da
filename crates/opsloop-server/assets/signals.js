// A service's golden-signals dashboard: asks the page's data address (the server builds the
// queries, scoped to the service's route) and draws each panel with `OpsloopChart` (chart.js,
// loaded before this script), one line per version, deployments as vertical markers.
(function () {
  "use strict";

  var Chart = window.OpsloopChart;
  var root = document.getElementById("signals");
  if (!root || !Chart) return;
  var errorBox = document.getElementById("signals-error");
  var REFRESH_SECONDS = 30;

  var start = parseFloat(root.getAttribute("data-start"));
  var end = parseFloat(root.getAttribute("data-end"));
  var live = root.getAttribute("data-live") === "true";
  var span = end - start;

  var markers = Array.prototype.map.call(document.querySelectorAll("#signals-deployments li"), function (li) {
    return { at: parseFloat(li.getAttribute("data-at")), label: li.getAttribute("data-label"), kind: li.getAttribute("data-kind") };
  });

  function percent(v) { return parseFloat((v * 100).toPrecision(3)) + "%"; }

  // How each unit reads on an axis and in the tooltip.
  var FORMATS = {
    reqps: function (v) { return Chart.humanize(v, 3) + "/s"; },
    ratio: percent,
    seconds: function (v) { return Chart.humanize(v, 3) + "s"; }
  };

  var panels = Array.prototype.map.call(root.querySelectorAll("section.signal-panel"), function (section) {
    var id = section.getAttribute("data-panel");
    return {
      id: id,
      title: section.getAttribute("data-title"),
      format: FORMATS[section.getAttribute("data-unit")],
      chart: section.querySelector(".chart"),
      legend: section.querySelector(".legend"),
      status: section.querySelector(".status"),
      state: { isolated: -1 },
      shown: null
    };
  });

  function version(metric) { return metric.version || "(no version)"; }

  function drawPanel(panel) {
    if (!panel.shown) return;
    var drawn = Chart.draw({
      chart: panel.chart, legend: panel.legend, id: "signals-" + panel.id, title: panel.title,
      data: panel.shown.result, start: panel.shown.start, end: panel.shown.end, step: panel.shown.step,
      name: version, format: panel.format, markers: markers, state: panel.state
    });
    panel.status.textContent = drawn.series === 0 ? "No data in this range." :
      drawn.series + (drawn.series === 1 ? " version" : " versions") + ", step " + Chart.formatDuration(panel.shown.step) + ".";
  }

  var generation = 0;

  function load() {
    if (live) {
      end = Date.now() / 1000;
      start = end - span;
    }
    var step = Chart.autoStep(end - start);
    var mine = ++generation;
    var url = root.getAttribute("data-url") + "&" + new URLSearchParams({
      start: start.toFixed(3), end: end.toFixed(3), step: String(step)
    }).toString();
    panels.forEach(function (p) { if (!p.shown) p.status.textContent = "Loading…"; });
    Chart.getData(url).then(function (data) {
      if (mine !== generation) return;
      errorBox.hidden = true;
      errorBox.textContent = "";
      data.panels.forEach(function (answer) {
        var panel = panels.find(function (p) { return p.id === answer.id; });
        if (!panel) return;
        panel.shown = { result: answer.result, start: start, end: end, step: step };
        drawPanel(panel);
      });
    }, function (error) {
      if (mine !== generation) return;
      errorBox.textContent = error.message;
      errorBox.hidden = false;
      panels.forEach(function (p) { p.status.textContent = ""; });
    });
  }

  var resizing = null;
  window.addEventListener("resize", function () {
    window.clearTimeout(resizing);
    resizing = window.setTimeout(function () { panels.forEach(drawPanel); }, 150);
  });
  if (live) {
    window.setInterval(function () { if (!document.hidden) load(); }, REFRESH_SECONDS * 1000);
  }
  load();
})();
