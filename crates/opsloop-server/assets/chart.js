// The line charts of the Metrics pages (the graph page and the golden-signals dashboard), as
// `window.OpsloopChart`: Prometheus range results drawn as SVG with axes, a legend and a hover
// tooltip. No library: the pages must work on a machine without network, and the
// Content-Security-Policy allows no inline styles, so geometry goes in SVG attributes and
// positions through the CSSOM.
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var HEIGHT = 320;
  var MARGIN = { top: 10, right: 16, bottom: 28, left: 64 };
  // Distinct on light and dark backgrounds alike.
  var PALETTE = ["#1f77b4", "#e8710a", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf"];

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

  // As Prometheus's own UI: about 250 points over the range, never under a second.
  function autoStep(range) {
    return Math.max(Math.floor(range / 250), 1);
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

  // ---- Talking to the server -------------------------------------------------------------

  // GET `url`; resolves to the answer's `data` (Prometheus's envelope), or rejects with an
  // Error whose message is the answer's `error` (and `kind` its `errorType`).
  function getData(url) {
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

  // ---- The chart -------------------------------------------------------------------------

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(node);
    return node;
  }

  // Draws a range result (`data`, a matrix) into `opts.chart`, its legend into `opts.legend`.
  // opts: { chart, legend, id, data, start, end, step (seconds), name (metric → legend text),
  // format (value → text, for ticks and the tooltip), markers ([{at: seconds, label}]), state
  // ({isolated: -1}, kept by the caller across redraws) }. Returns the number of series and
  // points drawn.
  function draw(opts) {
    var chart = opts.chart, legend = opts.legend;
    var state = opts.state || (opts.state = { isolated: -1 });
    var name = opts.name || seriesName;
    var format = opts.format || function (v) { return humanize(v, 4); };
    var markers = opts.markers || [];
    chart.textContent = "";
    if (legend) legend.textContent = "";
    var series = opts.data.result.map(function (s, i) {
      return {
        name: name(s.metric),
        color: PALETTE[i % PALETTE.length],
        points: s.values.map(function (p) { return [p[0], sampleValue(p[1])]; })
      };
    });
    if (state.isolated >= series.length) state.isolated = -1;
    var isolated = state.isolated;
    var total = series.reduce(function (n, s) { return n + s.points.length; }, 0);
    if (series.length === 0 && markers.length === 0) return { series: 0, points: 0 };

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
    var start = opts.start, end = opts.end;
    var x = function (t) { return MARGIN.left + (t - start) / (end - start) * plotW; };
    var y = function (v) { return MARGIN.top + (1 - (v - min) / (max - min)) * plotH; };

    var svg = el("svg", {
      id: opts.id, viewBox: "0 0 " + width + " " + HEIGHT, width: width, height: HEIGHT,
      role: "img", "aria-label": (opts.title ? opts.title + ": " : "Graph of ") + series.length + " series"
    }, chart);
    var grid = el("g", { "class": "grid" }, svg);
    yTicks.forEach(function (v) {
      el("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: y(v), y2: y(v) }, grid);
      var label = el("text", { x: MARGIN.left - 6, y: y(v), "class": "tick y", "text-anchor": "end", "dominant-baseline": "middle" }, svg);
      label.textContent = format(v);
    });
    var xt = timeTicks(start, end, Math.max(2, Math.floor(plotW / 110)));
    xt.ticks.forEach(function (t) {
      el("line", { x1: x(t), x2: x(t), y1: MARGIN.top, y2: MARGIN.top + plotH }, grid);
      var label = el("text", { x: x(t), y: HEIGHT - 8, "class": "tick x", "text-anchor": "middle" }, svg);
      label.textContent = timeLabel(t, xt.step);
    });
    el("rect", { "class": "frame", x: MARGIN.left, y: MARGIN.top, width: plotW, height: plotH }, svg);

    // Vertical markers (a deployment's start and end), with their label along the line.
    markers.forEach(function (m) {
      if (m.at < start || m.at > end) return;
      var g = el("g", { "class": "event " + (m.kind || ""), "data-at": m.at }, svg);
      el("line", { x1: x(m.at), x2: x(m.at), y1: MARGIN.top, y2: MARGIN.top + plotH }, g);
      var text = el("text", { x: x(m.at) + 3, y: MARGIN.top + 10, "class": "event-label" }, g);
      text.textContent = m.label;
      var title = el("title", {}, g);
      title.textContent = m.label + " at " + fullTime(m.at);
    });

    // A gap of more than about two steps without samples breaks the line, as in Prometheus.
    var gap = opts.step * 2.5;
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
      var path = el("path", { "class": "series", d: d, stroke: s.color, "data-series": i, "data-name": s.name }, svg);
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
      var shownValue = opts.format ? format(best.p[1]) : String(best.p[1]);
      [["time", fullTime(best.p[0])], ["value", shownValue], ["series", best.s.name]].forEach(function (line) {
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

    if (legend) {
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
          state.isolated = state.isolated === i ? -1 : i;
          draw(opts);
          var again = legend.querySelectorAll("button")[i];
          if (again) again.focus();
        });
        li.appendChild(button);
        legend.appendChild(li);
      });
    }
    return { series: series.length, points: total };
  }

  window.OpsloopChart = {
    parseDuration: parseDuration,
    formatDuration: formatDuration,
    localValue: localValue,
    fullTime: fullTime,
    autoStep: autoStep,
    humanize: humanize,
    seriesName: seriesName,
    getData: getData,
    draw: draw
  };
})();
