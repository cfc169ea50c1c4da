// Live job logs: appends lines the server streams (already HTML-escaped by the server) and
// reloads the page when the job ends. Without JavaScript the page refreshes itself instead.
(function () {
  var log = document.querySelector("pre.log[data-live]");
  if (!log || !window.EventSource) return;
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
})();
