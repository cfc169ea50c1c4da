// The Metrics graph page: runs PromQL through Prometheus's HTTP API (/prometheus/api/v1, with
// the session cookie; GET, so no CSRF token) and draws the answer with `OpsloopChart`
// (chart.js, loaded before this script).
(function () {
  "use strict";

  var Chart = window.OpsloopChart;
  var API = "/prometheus/api/v1/";
  var parseDuration = Chart.parseDuration, formatDuration = Chart.formatDuration;
  var localValue = Chart.localValue, fullTime = Chart.fullTime, seriesName = Chart.seriesName;

  var form = document.getElementById("metrics-query");
  if (!form) return;
  var exprField = form.elements.expr;
  var rangeField = form.elements.range;
  var endField = form.elements.end;
  var stepField = form.elements.step;
  var refreshField = form.elements.refresh;
  var tabField = form.elements.tab;
  var names = document.getElementById("metrics-names");
  var errorBox = document.getElementById("metrics-error");
  var stepHint = document.getElementById("metrics-step-hint");
  var chart = document.getElementById("chart");
  var legend = document.getElementById("legend");
  var graphStatus = document.getElementById("graph-status");
  var tableStatus = document.getElementById("table-status");
  var tableBody = document.querySelector("#result-table tbody");
  var tabs = { graph: document.getElementById("tab-graph"), table: document.getElementById("tab-table") };
  var panels = { graph: document.getElementById("panel-graph"), table: document.getElementById("panel-table") };

  // Only the newest answer is drawn: an older query that answers late is dropped.
  var generation = 0;
  var refreshTimer = null;
  // The last range result, kept to redraw on resize and legend clicks without asking again.
  var shown = null;
  // Which series the legend shows alone (-1: all), kept across redraws.
  var chartState = { isolated: -1 };

  // ---- Times ---------------------------------------------------------------------------

  // The end of the range in Unix seconds: the field's local time, or now when it is empty.
  function endSeconds() {
    if (endField.value) {
      var t = new Date(endField.value).getTime();
      if (!isNaN(t)) return t / 1000;
    }
    return Date.now() / 1000;
  }

  function rangeSeconds() {
    var s = parseDuration(rangeField.value);
    return isFinite(s) && s > 0 ? s : 3600;
  }

  function stepSeconds() {
    var set = parseDuration(stepField.value);
    return stepField.value.trim() && isFinite(set) && set > 0 ? set : Chart.autoStep(rangeSeconds());
  }

  // ---- The URL ---------------------------------------------------------------------------

  function currentState() {
    var state = { expr: exprField.value, range: rangeField.value, tab: tabField.value };
    if (endField.value) {
      var end = new Date(endField.value);
      if (!isNaN(end.getTime())) state.end = end.toISOString().replace(/\.000Z$/, "Z");
    }
    if (stepField.value.trim()) state.step = stepField.value.trim();
    if (refreshField.value) state.refresh = refreshField.value;
    return state;
  }

  // How a run changes the address: a new entry (a query someone ran), the same entry changed
  // (a tab), or not at all (loading the page, going back, refreshing).
  var PUSH = "push", REPLACE = "replace", KEEP = "keep";

  function writeUrl(how) {
    if (how === KEEP) return;
    var params = new URLSearchParams();
    var state = currentState();
    Object.keys(state).forEach(function (k) { params.set(k, state[k]); });
    var url = location.pathname + "?" + params.toString();
    if (url === location.pathname + location.search) return;
    if (how === PUSH) history.pushState(null, "", url); else history.replaceState(null, "", url);
  }

  // Fills the fields from the URL (the server filled most already; the end field needs the
  // browser's time zone, and going back in history needs all of them).
  function readUrl() {
    var params = new URLSearchParams(location.search);
    exprField.value = params.get("expr") || "";
    var range = params.get("range");
    if (range && isFinite(parseDuration(range))) {
      if (!Array.prototype.some.call(rangeField.options, function (o) { return o.value === range; })) {
        var option = document.createElement("option");
        option.value = range;
        option.textContent = "last " + range;
        rangeField.appendChild(option);
      }
      rangeField.value = range;
    }
    var end = params.get("end");
    var endDate = end ? new Date(/^\d+(\.\d+)?$/.test(end) ? parseFloat(end) * 1000 : end) : null;
    endField.value = endDate && !isNaN(endDate.getTime()) ? localValue(endDate) : "";
    stepField.value = params.get("step") || "";
    refreshField.value = params.get("refresh") || "";
    if (refreshField.selectedIndex < 0) refreshField.value = "";
    selectTab(params.get("tab") === "table" ? "table" : "graph");
  }

  // ---- Talking to the API ----------------------------------------------------------------

  function showError(message, kind) {
    if (!message) {
      errorBox.hidden = true;
      errorBox.textContent = "";
      errorBox.removeAttribute("data-error-type");
      return;
    }
    errorBox.textContent = message;
    if (kind) errorBox.setAttribute("data-error-type", kind);
    errorBox.hidden = false;
  }

  // GET `path` under the API with `params`; see `OpsloopChart.getData`.
  function api(path, params) {
    return Chart.getData(API + path + "?" + new URLSearchParams(params).toString());
  }

  function run(how) {
    writeUrl(how);
    var expr = exprField.value.trim();
    var mine = ++generation;
    var step = stepSeconds();
    stepHint.textContent = stepField.value.trim() ? "using " + formatDuration(step) : "auto: " + formatDuration(step);
    if (!expr) {
      showError("");
      clearResults("Enter an expression and press Enter (or Run).");
      return;
    }
    var end = endSeconds();
    var range = rangeSeconds();
    var tab = tabField.value;
    var request;
    if (tab === "table") {
      tableStatus.textContent = "Loading…";
      request = api("query", { query: expr, time: end.toFixed(3) });
    } else {
      graphStatus.textContent = "Loading…";
      request = api("query_range", {
        query: expr, start: (end - range).toFixed(3), end: end.toFixed(3), step: String(step)
      });
    }
    request.then(function (data) {
      if (mine !== generation) return;
      showError("");
      if (tab === "table") drawTable(data, end); else {
        shown = { data: data, start: end - range, end: end, step: step };
        drawGraph();
      }
    }, function (error) {
      if (mine !== generation) return;
      showError(error.message, error.kind);
      (tab === "table" ? tableStatus : graphStatus).textContent = "";
    });
  }

  function clearResults(message) {
    shown = null;
    chart.textContent = "";
    legend.textContent = "";
    tableBody.textContent = "";
    graphStatus.textContent = message;
    tableStatus.textContent = message;
  }

  // ---- The table -------------------------------------------------------------------------

  function cell(row, text, code) {
    var td = document.createElement("td");
    if (code) {
      var c = document.createElement("code");
      c.textContent = text;
      td.appendChild(c);
    } else {
      td.textContent = text;
    }
    row.appendChild(td);
    return td;
  }

  function drawTable(data, at) {
    tableBody.textContent = "";
    var rows = [];
    if (data.resultType === "vector") {
      rows = data.result.map(function (s) { return [seriesName(s.metric), s.value[1]]; });
    } else if (data.resultType === "matrix") {
      rows = data.result.map(function (s) {
        return [seriesName(s.metric), s.values.map(function (p) { return p[1] + " @" + p[0]; }).join("\n")];
      });
    } else if (data.resultType === "scalar" || data.resultType === "string") {
      rows = [[data.resultType, String(data.result[1])]];
    }
    rows.forEach(function (r) {
      var tr = document.createElement("tr");
      cell(tr, r[0], true);
      cell(tr, r[1], false).className = "value";
      tableBody.appendChild(tr);
    });
    tableStatus.textContent = (rows.length === 0 ? "No data" : rows.length + (rows.length === 1 ? " result" : " results")) +
      " at " + fullTime(at) + ".";
  }

  // ---- The graph -------------------------------------------------------------------------

  function drawGraph() {
    chart.textContent = "";
    legend.textContent = "";
    if (!shown) return;
    var data = shown.data;
    if (data.resultType !== "matrix") {
      graphStatus.textContent = "The query answered a " + data.resultType + "; the Table tab shows it.";
      return;
    }
    var drawn = Chart.draw({
      chart: chart, legend: legend, id: "metrics-chart", data: data,
      start: shown.start, end: shown.end, step: shown.step, state: chartState
    });
    graphStatus.textContent = drawn.series === 0 ? "No data in this range." :
      drawn.series + " series, " + drawn.points + " points, step " + formatDuration(shown.step) + ".";
  }

  // ---- Tabs, refresh, metric names -------------------------------------------------------

  function selectTab(name) {
    tabField.value = name;
    Object.keys(tabs).forEach(function (key) {
      tabs[key].setAttribute("aria-selected", key === name ? "true" : "false");
      panels[key].hidden = key !== name;
    });
  }

  function setRefresh() {
    if (refreshTimer) window.clearInterval(refreshTimer);
    refreshTimer = null;
    var seconds = parseDuration(refreshField.value);
    if (refreshField.value && isFinite(seconds) && seconds > 0) {
      refreshTimer = window.setInterval(function () {
        // Not while hidden, nor while someone edits the expression (it would run half-typed).
        if (document.hidden || document.activeElement === exprField) return;
        run(KEEP);
      }, seconds * 1000);
    }
  }

  function loadNames() {
    api("label/__name__/values", {}).then(function (values) {
      names.textContent = "";
      var first = document.createElement("option");
      first.value = "";
      first.textContent = values.length === 0 ? "none stored yet" :
        "— " + values.length + (values.length === 1 ? " metric —" : " metrics —");
      names.appendChild(first);
      values.forEach(function (v) {
        var option = document.createElement("option");
        option.value = v;
        option.textContent = v;
        names.appendChild(option);
      });
    }, function () { /* The list is a convenience; the query itself reports what is wrong. */ });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    run(PUSH);
  });
  exprField.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      run(PUSH);
    }
  });
  Object.keys(tabs).forEach(function (key) {
    tabs[key].addEventListener("click", function () {
      selectTab(key);
      run(REPLACE);
    });
    tabs[key].addEventListener("keydown", function (event) {
      if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
      var other = key === "graph" ? "table" : "graph";
      selectTab(other);
      tabs[other].focus();
      run(REPLACE);
    });
  });
  [rangeField, endField, stepField].forEach(function (field) {
    field.addEventListener("change", function () { run(PUSH); });
  });
  refreshField.addEventListener("change", function () {
    setRefresh();
    writeUrl(REPLACE);
  });
  names.addEventListener("change", function () {
    if (!names.value) return;
    var start = exprField.selectionStart, end = exprField.selectionEnd, text = exprField.value;
    exprField.value = text.slice(0, start) + names.value + text.slice(end);
    exprField.focus();
    exprField.selectionStart = exprField.selectionEnd = start + names.value.length;
    names.value = "";
  });
  window.addEventListener("popstate", function () {
    readUrl();
    setRefresh();
    run(KEEP);
  });
  var resizing = null;
  window.addEventListener("resize", function () {
    window.clearTimeout(resizing);
    resizing = window.setTimeout(function () { if (tabField.value === "graph") drawGraph(); }, 150);
  });

  readUrl();
  setRefresh();
  loadNames();
  run(KEEP);
})();
