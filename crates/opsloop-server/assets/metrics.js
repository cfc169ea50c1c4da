// The Metrics graph page: runs PromQL through Prometheus's HTTP API (/prometheus/api/v1, with
// the session cookie; GET, so no CSRF token) and draws the answer as SVG. No library: the page
// must work on a machine without network, and the Content-Security-Policy allows no inline
// styles, so geometry goes in SVG attributes and positions through the CSSOM.
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var API = "/prometheus/api/v1/";
  var HEIGHT = 320;
  var MARGIN = { top: 10, right: 16, bottom: 28, left: 64 };
  // Distinct on light and dark backgrounds alike.
  var PALETTE = ["#1f77b4", "#e8710a", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf"];

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
  var isolated = -1;

  // ---- Durations and times ----------------------------------------------------------------

  var UNITS = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800, y: 31536000 };

  // Seconds in "5m", "1h30m" or "90"; NaN when it is neither.
  function parseDuration(text) {
    text = (text || "").trim();
    if (/^\d+(\.\d+)?$/.test(text)) return parseFloat(text);
    var re = /(\d+)(ms|s|m|h|d|w|y)/g;
    var total = 0, used = 0, part;
    while ((part = re.exec(text)) !== null) {
      total += parseInt(part[1], 10) * UNITS[part[2]];
      used += part[0].length;
    }
    return used === text.length && used > 0 ? total : NaN;
  }

  function formatDuration(seconds) {
    var out = "";
    [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]].forEach(function (unit) {
      var n = Math.floor(seconds / unit[1]);
      if (n > 0) { out += n + unit[0]; seconds -= n * unit[1]; }
    });
    return out || "0s";
  }

  // The end of the range in Unix seconds: the field's local time, or now when it is empty.
  function endSeconds() {
    if (endField.value) {
      var t = new Date(endField.value).getTime();
      if (!isNaN(t)) return t / 1000;
    }
    return Date.now() / 1000;
  }

  function pad(n) { return n < 10 ? "0" + n : "" + n; }

  // A Date as a datetime-local field's value (local time, seconds included).
  function localValue(date) {
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) + "T" +
      pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds());
  }

  function fullTime(seconds) {
    var d = new Date(seconds * 1000);
    return localValue(d).replace("T", " ");
  }

  function rangeSeconds() {
    var s = parseDuration(rangeField.value);
    return isFinite(s) && s > 0 ? s : 3600;
  }

  // As Prometheus's own UI: about 250 points over the range, never under a second.
  function autoStep(range) {
    return Math.max(Math.floor(range / 250), 1);
  }

  function stepSeconds() {
    var set = parseDuration(stepField.value);
    return stepField.value.trim() && isFinite(set) && set > 0 ? set : autoStep(rangeSeconds());
  }

  // ---- Numbers ---------------------------------------------------------------------------

  var PREFIXES = [[1e15, "P"], [1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"], [1, ""],
    [1e-3, "m"], [1e-6, "µ"], [1e-9, "n"]];

  // 1500 → "1.5k", 0.25 → "250m": SI suffixes, at most `digits` significant digits.
  function humanize(v, digits) {
    if (v === 0) return "0";
    if (!isFinite(v)) return String(v);
    var abs = Math.abs(v);
    for (var i = 0; i < PREFIXES.length; i++) {
      if (abs >= PREFIXES[i][0] || i === PREFIXES.length - 1) {
        var scaled = v / PREFIXES[i][0];
        return String(parseFloat(scaled.toPrecision(digits || 3))) + PREFIXES[i][1];
      }
    }
    return String(v);
  }

  // The API sends values as strings ("NaN", "+Inf" included).
  function sampleValue(text) {
    if (text === "+Inf") return Infinity;
    if (text === "-Inf") return -Infinity;
    return parseFloat(text);
  }

  // Round tick values from at or below `min` to at or above `max`: steps of 1, 2 or 5 times a
  // power of ten, so the axis ends on labelled lines.
  function niceTicks(min, max, count) {
    var raw = (max - min) / Math.max(count, 1);
    var power = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 5, 10].map(function (m) { return m * power; }).find(function (s) { return s >= raw; });
    var ticks = [];
    var last = Math.ceil(max / step - 1e-9);
    for (var i = Math.floor(min / step + 1e-9); i <= last; i++) {
      // Multiples, not sums, and rounded: floats drift (0.30000000000000004).
      ticks.push(parseFloat((i * step).toPrecision(12)));
    }
    return ticks;
  }

  var TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
    43200, 86400, 172800, 604800];

  // Ticks at round local times (every 5 minutes, every hour…), about `count` of them.
  function timeTicks(start, end, count) {
    var raw = (end - start) / Math.max(count, 1);
    var step = TIME_STEPS.find(function (s) { return s >= raw; }) || TIME_STEPS[TIME_STEPS.length - 1];
    // Aligned in local time, so hours and days fall where the clock on the wall says.
    var offset = -new Date(start * 1000).getTimezoneOffset() * 60;
    var first = Math.ceil((start + offset) / step) * step - offset;
    var ticks = [];
    for (var t = first; t <= end; t += step) ticks.push(t);
    return { ticks: ticks, step: step };
  }

  function timeLabel(t, step) {
    var d = new Date(t * 1000);
    if (step >= 86400) return pad(d.getMonth() + 1) + "-" + pad(d.getDate());
    var hm = pad(d.getHours()) + ":" + pad(d.getMinutes());
    return step < 60 ? hm + ":" + pad(d.getSeconds()) : hm;
  }

  // ---- Labels ----------------------------------------------------------------------------

  // `name{a="1", b="2"}` as Prometheus writes a series.
  function seriesName(metric) {
    var name = metric.__name__ || "";
    var pairs = Object.keys(metric).filter(function (k) { return k !== "__name__"; }).sort()
      .map(function (k) { return k + "=\"" + metric[k] + "\""; });
    return name + "{" + pairs.join(", ") + "}";
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

  // GET `path` with `params`; resolves to the answer's `data`, or rejects with an Error whose
  // message is the API's `error` (and `kind` its `errorType`).
  function api(path, params) {
    var url = API + path + "?" + new URLSearchParams(params).toString();
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.json().catch(function () {
          throw new Error("the server answered " + response.status + " " + response.statusText);
        }).then(function (body) {
          if (body.status === "success") return body.data;
          // Prometheus's envelope ({errorType, error}), or opsloop's own refusal before the
          // handler ran ({error: {code, message}}, e.g. a session that ended).
          var own = body.error && typeof body.error === "object" ? body.error : null;
          var message = own ? own.message : body.error;
          var error = new Error(message || ("the server answered " + response.status));
          error.kind = own ? own.code : (body.errorType || "");
          throw error;
        });
      });
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

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(node);
    return node;
  }

  function drawGraph() {
    chart.textContent = "";
    legend.textContent = "";
    if (!shown) return;
    var data = shown.data;
    if (data.resultType !== "matrix") {
      graphStatus.textContent = "The query answered a " + data.resultType + "; the Table tab shows it.";
      return;
    }
    var series = data.result.map(function (s, i) {
      return {
        name: seriesName(s.metric),
        color: PALETTE[i % PALETTE.length],
        points: s.values.map(function (p) { return [p[0], sampleValue(p[1])]; })
      };
    });
    if (isolated >= series.length) isolated = -1;
    var total = series.reduce(function (n, s) { return n + s.points.length; }, 0);
    graphStatus.textContent = series.length === 0 ? "No data in this range." :
      series.length + " series, " + total + " points, step " +
      formatDuration(shown.step) + ".";
    if (series.length === 0) return;

    var visible = series.filter(function (s, i) { return isolated < 0 || i === isolated; });
    var min = Infinity, max = -Infinity;
    visible.forEach(function (s) {
      s.points.forEach(function (p) {
        if (isFinite(p[1])) { min = Math.min(min, p[1]); max = Math.max(max, p[1]); }
      });
    });
    if (min === Infinity) { min = 0; max = 1; }
    if (min === max) {
      var pad0 = Math.abs(min) * 0.1 || 1;
      min -= pad0; max += pad0;
    }
    var yTicks = niceTicks(min, max, 5);
    min = Math.min(min, yTicks[0]);
    max = Math.max(max, yTicks[yTicks.length - 1]);

    var width = Math.max(chart.clientWidth || 0, 320);
    var plotW = width - MARGIN.left - MARGIN.right;
    var plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
    var x = function (t) { return MARGIN.left + (t - shown.start) / (shown.end - shown.start) * plotW; };
    var y = function (v) { return MARGIN.top + (1 - (v - min) / (max - min)) * plotH; };

    var svg = el("svg", {
      id: "metrics-chart", viewBox: "0 0 " + width + " " + HEIGHT, width: width, height: HEIGHT,
      role: "img", "aria-label": "Graph of " + series.length + " series"
    }, chart);
    var grid = el("g", { "class": "grid" }, svg);
    yTicks.forEach(function (v) {
      el("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: y(v), y2: y(v) }, grid);
      var label = el("text", { x: MARGIN.left - 6, y: y(v), "class": "tick y", "text-anchor": "end", "dominant-baseline": "middle" }, svg);
      label.textContent = humanize(v, 4);
    });
    var xt = timeTicks(shown.start, shown.end, Math.max(2, Math.floor(plotW / 110)));
    xt.ticks.forEach(function (t) {
      el("line", { x1: x(t), x2: x(t), y1: MARGIN.top, y2: MARGIN.top + plotH }, grid);
      var label = el("text", { x: x(t), y: HEIGHT - 8, "class": "tick x", "text-anchor": "middle" }, svg);
      label.textContent = timeLabel(t, xt.step);
    });
    el("rect", { "class": "frame", x: MARGIN.left, y: MARGIN.top, width: plotW, height: plotH }, svg);

    // A gap of more than about two steps without samples breaks the line, as in Prometheus.
    var gap = shown.step * 2.5;
    series.forEach(function (s, i) {
      var d = "", last = null;
      s.points.forEach(function (p) {
        if (!isFinite(p[1])) { last = null; return; }
        var cmd = last === null || p[0] - last > gap ? "M" : "L";
        d += cmd + x(p[0]).toFixed(1) + " " + y(p[1]).toFixed(1);
        // A lone sample is a zero-length segment, drawn as a dot by the round line caps.
        if (cmd === "M") d += "h0";
        last = p[0];
      });
      var path = el("path", { "class": "series", d: d, stroke: s.color, "data-series": i }, svg);
      if (isolated >= 0 && i !== isolated) path.setAttribute("display", "none");
    });

    // The hover layer: the nearest sample of a shown series, with its time, value and series.
    var marker = el("circle", { "class": "marker", r: 4, display: "none" }, svg);
    var overlay = el("rect", { "class": "overlay", x: MARGIN.left, y: MARGIN.top, width: plotW, height: plotH }, svg);
    var tip = document.createElement("div");
    tip.className = "tooltip";
    tip.hidden = true;
    chart.appendChild(tip);
    overlay.addEventListener("mousemove", function (event) {
      var box = svg.getBoundingClientRect();
      var px = (event.clientX - box.left) * width / box.width;
      var py = (event.clientY - box.top) * HEIGHT / box.height;
      var best = null;
      series.forEach(function (s, i) {
        if (isolated >= 0 && i !== isolated) return;
        s.points.forEach(function (p) {
          if (!isFinite(p[1])) return;
          var dx = x(p[0]) - px, dy = y(p[1]) - py;
          var dist = dx * dx + dy * dy;
          if (!best || dist < best.dist) best = { dist: dist, s: s, p: p };
        });
      });
      if (!best) return;
      marker.setAttribute("cx", x(best.p[0]));
      marker.setAttribute("cy", y(best.p[1]));
      marker.setAttribute("fill", best.s.color);
      marker.removeAttribute("display");
      tip.textContent = "";
      [["time", fullTime(best.p[0])], ["value", String(best.p[1])], ["series", best.s.name]].forEach(function (line) {
        var div = document.createElement("div");
        var b = document.createElement("b");
        b.textContent = line[0] + ": ";
        div.appendChild(b);
        div.appendChild(document.createTextNode(line[1]));
        tip.appendChild(div);
      });
      tip.hidden = false;
      // CSSOM positions, which the Content-Security-Policy allows (style attributes it does not).
      var left = x(best.p[0]) / width * box.width + 12;
      tip.style.left = Math.min(left, Math.max(box.width - tip.offsetWidth, 0)) + "px";
      tip.style.top = (y(best.p[1]) / HEIGHT * box.height + 12) + "px";
    });
    overlay.addEventListener("mouseleave", function () {
      marker.setAttribute("display", "none");
      tip.hidden = true;
    });

    series.forEach(function (s, i) {
      var li = document.createElement("li");
      var button = document.createElement("button");
      button.type = "button";
      button.className = "series" + (isolated >= 0 && i !== isolated ? " off" : "");
      button.setAttribute("aria-pressed", isolated === i ? "true" : "false");
      button.title = isolated === i ? "Show all series" : "Show only this series";
      var swatch = el("svg", { width: 12, height: 12, "aria-hidden": "true" }, button);
      el("rect", { width: 12, height: 12, rx: 2, fill: s.color }, swatch);
      var text = document.createElement("span");
      text.textContent = s.name;
      button.appendChild(text);
      button.addEventListener("click", function () {
        isolated = isolated === i ? -1 : i;
        drawGraph();
        var again = legend.querySelectorAll("button")[i];
        if (again) again.focus();
      });
      li.appendChild(button);
      legend.appendChild(li);
    });
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
