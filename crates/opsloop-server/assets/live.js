// Live pages. Without JavaScript, running pages refresh themselves through a <noscript> meta
// refresh instead.
(function () {
  // A job log: append the lines the server streams (already HTML-escaped by the server) and
  // reload the page when the job ends.
  var log = document.querySelector("pre.log[data-live]");
  if (log && window.EventSource) {
    var source = new EventSource(log.getAttribute("data-live"));
    source.addEventListener("log", function (event) {
      var atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 8;
      log.insertAdjacentHTML("beforeend", event.data);
      if (atBottom) window.scrollTo(0, document.body.scrollHeight);
    });
    source.addEventListener("end", function () {
      source.close();
      window.location.reload();
    });
  }

  // A page of running work: reload every few seconds, but never under a person's hands: not
  // while a form field has focus or holds something typed.
  var marker = document.querySelector("[data-refresh]");
  if (!marker) return;
  var seconds = parseInt(marker.getAttribute("data-refresh"), 10) || 3;
  function busy() {
    var active = document.activeElement;
    if (active && active.form) return true;
    var fields = document.querySelectorAll("input, textarea, select");
    for (var i = 0; i < fields.length; i++) {
      var field = fields[i];
      if (field.type === "hidden") continue;
      if (field.value !== field.defaultValue) return true;
    }
    return false;
  }
  function tick() {
    if (busy()) {
      window.setTimeout(tick, seconds * 1000);
    } else {
      window.location.reload();
    }
  }
  window.setTimeout(tick, seconds * 1000);
})();
