#!/usr/bin/env python3
"""opsloop in Alertmanager's role side by side with Alertmanager 0.25 (Debian's
/usr/bin/prometheus-alertmanager), on this machine, with the same stream of alerts and the same
alertmanager.yml.

  stream   --rate alerts/s (default 10,000) for --duration s (default 30; the issue's is 60) to
           POST /api/v2/alerts, in batches of --batch (1,000) from --posters concurrent
           keep-alive connections, paced on one schedule; the alerts cycle over --distinct
           (50,000) label sets, so each is posted again and again (no endsAt: they stay
           firing); every 2 of them share a `group` label (25,000 groups)
  config   route: group_by [group], group_wait 1s, group_interval 5m; one webhook receiver
           pointing at a Python sink (its own process) that counts notifications and
           timestamps them
  markers  --markers alerts with a `group` of their own, posted one by one during the stream;
           alert-in -> first notification = the sink's arrival time - the time the POST was
           sent (target: group_wait + 50 ms)
  figures  achieved alerts/s (accepted / time from the first send to the last answer: the stream
           is open-loop, so a slow last answer shows), p50/p99 POST latency (client side; for
           opsloop also its own /metrics histogram), RSS (peak, median; /proc/PID/status), CPU
           (utime + stime from /proc/PID/stat over the stream, as a fraction of one core),
           GET /api/v2/alerts/groups after the stream (client wall time, with a --groups-timeout:
           Alertmanager 0.25 was reported to take minutes over 23k groups), markers'
           notification latency p50/p99/max, notifications the sink received
  ratios   opsloop / Alertmanager for every figure (below 1 is better for opsloop)

The two run one after the other, never at once (2 cores); the load generator shares the
machine with them. opsloop's /alertmanager needs a token (an admin one is made); Alertmanager
none.

Usage: bench/alerting.py [--bin PATH | --skip-build] [--rate N] [--duration S] [--batch N]
                         [--posters N] [--distinct N] [--markers N] [--groups-timeout S]
                         [--only opsloop|alertmanager] [--json FILE] [--keep]
Exit status: 0 when every target is met, 1 otherwise, 2 when the setup failed.
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, threading, time
import urllib.parse, urllib.request
import http.client as httpclient
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
TICKS = os.sysconf("SC_CLK_TCK")
GROUP_WAIT = 1.0

TARGETS = {  # figure: (limit, higher is better)
    "alerts_per_s": (10_000, True),
    "cpu_cores": (1.0, False),
    "rss_peak_mb": (200, False),
    "groups_s": (1.0, False),
    "marker_p99_s": (GROUP_WAIT + 0.05, False),
}

# A rate is counted over the first send to the last answer of an open-loop schedule at the
# target rate: the window is a request's latency longer than the schedule, so a rate within 1%
# of the target (every request answered) is the target kept.
RATE_SLACK = 0.99

def say(text):
    print(text, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, token=None, timeout=120):
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def wait_http(url, token=None, seconds=60):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            http(url, token, timeout=2)
            return True
        except OSError:
            time.sleep(0.2)
    return False


def percentile(values, p):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))]


def server_histogram(port, method, route):
    """opsloop's own request-duration histogram for one route (`/metrics`): cumulative counts by
    bucket bound, to difference before and after a load."""
    text = http(f"http://127.0.0.1:{port}/metrics", timeout=30).decode()
    want = f'method="{method}",route="{route}"'
    buckets = {}
    for line in text.splitlines():
        if line.startswith("opsloop_http_request_duration_seconds_bucket{") and want in line:
            labels, value = line.rsplit(" ", 1)
            le = labels.split('le="', 1)[1].split('"', 1)[0]
            buckets[float("inf") if le == "+Inf" else float(le)] = float(value)
    return buckets


def server_quantile(before, after, q):
    """The bucket bound under which fraction q of the requests between the two readings were
    answered (an upper bound on the server's q-quantile), and how many there were."""
    diff = sorted((le, after.get(le, 0) - before.get(le, 0)) for le in after)
    if not diff or diff[-1][1] <= 0:
        return None, 0
    total = diff[-1][1]
    for le, count in diff:
        if count >= q * total:
            return le, total
    return float("inf"), total


# --- the webhook sink, run as its own process (`--sink PORT`) so it takes no GIL from the poster


def run_sink(port):
    lock = threading.Lock()
    state = {"notifications": 0, "alerts": 0, "markers": {}, "first": None, "last": None}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def reply(self, code, body=b""):
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            now = time.time()
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                payload = json.loads(body)
            except ValueError:
                payload = {}
            with lock:
                state["notifications"] += 1
                state["alerts"] += len(payload.get("alerts", []))
                state["first"] = state["first"] or now
                state["last"] = now
                group = (payload.get("groupLabels") or {}).get("group", "")
                if group.startswith("marker-") and group not in state["markers"]:
                    state["markers"][group] = now
            self.reply(200)

        def do_GET(self):
            if self.path == "/reset":
                with lock:
                    state.update(notifications=0, alerts=0, markers={}, first=None, last=None)
            with lock:
                body = json.dumps(state).encode()
            self.reply(200, body)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.request_queue_size = 1024
    print("ready", flush=True)
    server.serve_forever()


class Sink:
    def __init__(self, work):
        self.port = free_port()
        log = open(os.path.join(work, "sink.log"), "w")
        self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--sink", str(self.port)],
                                        stdout=subprocess.PIPE, stderr=log, text=True)
        self.process.stdout.readline()
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def state(self, reset=False):
        return json.loads(http(f"http://127.0.0.1:{self.port}/{'reset' if reset else 'state'}", timeout=10))


# --- the two engines


class Engine:
    def __init__(self, name, base, process, token=None):
        self.name, self.base, self.process, self.token = name, base, process, token
        self.rss = []

    def cpu(self):
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def sample_rss(self):
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    self.rss.append(int(line.split()[1]) / 1024)

    def headers(self):
        h = {"Content-Type": "application/json"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return h


def setup_opsloop(args):
    if args.bin:
        binary = os.path.abspath(args.bin)
    else:
        target_dir = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        binary = os.path.join(os.path.abspath(target_dir), "dist", "opsloop")
        if not args.skip_build:
            say(f"setup: cargo build --profile dist -p opsloop (CARGO_TARGET_DIR={target_dir})")
            subprocess.run(["cargo", "build", "--profile", "dist", "-p", "opsloop"], cwd=ROOT, check=True,
                           stdout=sys.stderr)
    if not os.access(binary, os.X_OK):
        say(f"setup: {binary} is missing")
        sys.exit(2)
    return binary


def alertmanager_yaml(sink_url):
    return f"""global:
  resolve_timeout: 5m
route:
  receiver: sink
  group_by: [group]
  group_wait: {int(GROUP_WAIT)}s
  group_interval: 5m
  repeat_interval: 4h
receivers:
  - name: sink
    webhook_configs:
      - url: {sink_url}
        send_resolved: false
"""


def start_opsloop(binary, work, config):
    data = os.path.join(work, "opsloop-data")
    port = free_port()
    log = open(os.path.join(work, "opsloop.log"), "w")
    process = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}", "--proxy-listen", "127.0.0.1:0", "--data-dir", data,
         "--alerting-config", config],
        stdout=log, stderr=log, env={**os.environ, "OPSLOOP_LOG_LEVEL": "warn", "NO_COLOR": "1"})
    if not wait_http(f"http://127.0.0.1:{port}/healthz"):
        raise RuntimeError(f"opsloop did not start; see {log.name}")
    made = subprocess.run([binary, "admin", "token", "create", "--name", "bench", "--role", "admin",
                           "--data-dir", data], capture_output=True, text=True)
    if made.returncode != 0:
        raise RuntimeError(f"opsloop admin token create: {made.stderr}")
    token = made.stdout.strip()
    base = f"http://127.0.0.1:{port}/alertmanager"
    if not wait_http(f"{base}/-/ready"):
        raise RuntimeError(f"opsloop's alerting is not ready; see {log.name}")
    return Engine("opsloop", base, process, token)


def start_alertmanager(work, config):
    data = os.path.join(work, "alertmanager-data")
    os.makedirs(data, exist_ok=True)
    port = free_port()
    log = open(os.path.join(work, "alertmanager.log"), "w")
    process = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={config}", f"--storage.path={data}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="], stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    if not wait_http(f"{base}/-/ready"):
        raise RuntimeError(f"alertmanager did not start; see {log.name}")
    return Engine("Alertmanager", base, process)


def stop(process):
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the stream


def alert(i):
    return {"labels": {"alertname": "BenchAlert", "group": f"g{i // 2:05}", "instance": f"host-{i:05}:9100",
                       "job": "bench", "severity": "warning"},
            "annotations": {"summary": f"bench alert {i}"},
            "generatorURL": "http://bench.example/graph"}


def batches(distinct, size):
    return [json.dumps([alert(i) for i in range(start, min(distinct, start + size))]).encode()
            for start in range(0, distinct, size)]


class Poster:
    """One keep-alive connection."""

    def __init__(self, engine):
        url = urllib.parse.urlsplit(engine.base)
        self.host, self.port, self.path = url.hostname, url.port, url.path.rstrip("/") + "/api/v2/alerts"
        self.headers = engine.headers()
        self.conn = None

    def post(self, body, timeout=30):
        for attempt in (0, 1):
            try:
                if self.conn is None:
                    self.conn = httpclient.HTTPConnection(self.host, self.port, timeout=timeout)
                self.conn.request("POST", self.path, body=body, headers=self.headers)
                response = self.conn.getresponse()
                data = response.read()
                return response.status, data
            except (OSError, httpclient.HTTPException):
                if self.conn:
                    self.conn.close()
                self.conn = None
                if attempt:
                    raise
        return None, b""


def stream(engine, args, bodies, sizes, sink):
    """Posts the stream on one schedule from several connections, the markers in between;
    samples RSS meanwhile. Returns the figures of the stream."""
    interval = args.batch / args.rate
    total = int(args.duration * args.rate / args.batch)
    lock = threading.Lock()
    nxt = [0]
    latencies, accepted, errors, last = [], [0], [], [0.0]
    start = time.monotonic() + 0.2

    def worker():
        poster = Poster(engine)
        while True:
            with lock:
                k = nxt[0]
                nxt[0] += 1
            if k >= total:
                return
            due = start + k * interval
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t0 = time.monotonic()
            try:
                status, data = poster.post(bodies[k % len(bodies)])
            except (OSError, httpclient.HTTPException) as e:
                with lock:
                    errors.append(str(e))
                continue
            took = time.monotonic() - t0
            with lock:
                last[0] = max(last[0], t0 + took)
                latencies.append(took)
                if status == 200:
                    accepted[0] += sizes[k % len(bodies)]
                elif len(errors) < 20:
                    errors.append(f"{status}: {data[:200]!r}")

    marker_times = {}

    def markers():
        poster = Poster(engine)
        if args.markers <= 0:
            return
        # Spread over the middle of the stream, after the first pass over the distinct alerts.
        first = min(max(args.duration * 0.3, args.distinct / args.rate + 3), args.duration * 0.5)
        gap = (args.duration - first - 1) / args.markers
        for m in range(args.markers):
            due = start + first + m * gap
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            group = f"marker-{m:03}"
            body = json.dumps([{"labels": {"alertname": "BenchMarker", "group": group, "job": "bench"},
                                "annotations": {"summary": "marker"}}]).encode()
            sent = time.time()
            try:
                status, _ = poster.post(body)
            except (OSError, httpclient.HTTPException) as e:
                errors.append(f"marker: {e}")
                continue
            if status == 200:
                marker_times[group] = sent

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.posters)]
    threads.append(threading.Thread(target=markers, daemon=True))
    cpu0, cpu_t0 = engine.cpu(), time.monotonic()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        engine.sample_rss()
        time.sleep(0.5)
    cpu = (engine.cpu() - cpu0) / (time.monotonic() - cpu_t0)
    wall = (last[0] or time.monotonic()) - start  # to the last answer, not the next poll
    engine.sample_rss()
    # The last markers' notifications come group_wait later; wait for them (and for the tail).
    time.sleep(GROUP_WAIT + 2)
    engine.sample_rss()
    seen = sink.state()
    lat = [seen["markers"][g] - t for g, t in marker_times.items() if g in seen["markers"]]
    return {
        "posted_alerts": total * args.batch, "accepted_alerts": accepted[0], "wall_s": wall,
        "alerts_per_s": accepted[0] / wall, "requests": len(latencies),
        "post_p50_ms": percentile(latencies, 50) * 1000 if latencies else None,
        "post_p99_ms": percentile(latencies, 99) * 1000 if latencies else None,
        "post_max_ms": max(latencies) * 1000 if latencies else None,
        "cpu_cores": cpu,
        "rss_peak_mb": max(engine.rss), "rss_median_mb": statistics.median(engine.rss),
        "markers_posted": len(marker_times), "markers_notified": len(lat),
        "marker_p50_s": percentile(lat, 50), "marker_p99_s": percentile(lat, 99),
        "marker_max_s": max(lat) if lat else None,
        "notifications": seen["notifications"], "notified_alerts": seen["alerts"],
        "errors": errors[:10],
    }


def groups_call(engine, timeout):
    url = f"{engine.base}/api/v2/alerts/groups"
    start = time.monotonic()
    try:
        body = http(url, engine.token, timeout=timeout)
    except socket.timeout:
        return {"groups_s": None, "groups_note": f"timed out after {timeout:.0f} s"}
    except OSError as e:
        if "timed out" in str(e):
            return {"groups_s": None, "groups_note": f"timed out after {timeout:.0f} s"}
        return {"groups_s": None, "groups_note": f"error: {e}"}
    took = time.monotonic() - start
    groups = json.loads(body)
    return {"groups_s": took, "groups": len(groups), "groups_alerts": sum(len(g["alerts"]) for g in groups),
            "groups_bytes": len(body), "groups_note": ""}


def run_one(name, start_engine, args, bodies, sizes, sink):
    say(f"{name}: starting")
    sink.state(reset=True)
    engine = start_engine()
    try:
        time.sleep(1)
        engine.rss = []
        idle = engine.cpu()
        engine.sample_rss()
        say(f"{name}: {args.rate} alerts/s for {args.duration} s ({args.posters} posters, batches of {args.batch})")
        port = urllib.parse.urlsplit(engine.base).port
        route = "/alertmanager/api/v2/alerts"
        hist0 = server_histogram(port, "POST", route) if engine.name == "opsloop" else None
        figures = stream(engine, args, bodies, sizes, sink)
        if hist0 is not None:
            hist1 = server_histogram(port, "POST", route)
            for q in (50, 99):
                le, _ = server_quantile(hist0, hist1, q / 100)
                figures[f"post_server_p{q}_le_ms"] = None if le is None else le * 1000
        say(f"{name}: {figures['alerts_per_s']:.0f} alerts/s, peak RSS {figures['rss_peak_mb']:.0f} MB; "
            f"GET /api/v2/alerts/groups (timeout {args.groups_timeout:.0f} s)")
        figures.update(groups_call(engine, args.groups_timeout))
        engine.sample_rss()
        figures["rss_peak_mb"] = max(engine.rss)
        figures["idle_cpu_s"] = idle
        for e in figures["errors"]:
            say(f"{name}: error: {e}")
        return figures
    finally:
        stop(engine.process)


def row(name, ours, theirs, unit, fmt="{:.1f}"):
    ratio = f"{ours / theirs:.2f}x" if isinstance(ours, (int, float)) and isinstance(theirs, (int, float)) and theirs else "-"
    show = lambda v: v if isinstance(v, str) else ("-" if v is None else fmt.format(v))
    print(f"  {name:<46} {show(ours):>14} {show(theirs):>14} {unit:<8} {ratio:>7}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--bin", help="the opsloop binary to run (default: build --profile dist)")
    ap.add_argument("--skip-build", action="store_true", help="use the dist binary already built")
    ap.add_argument("--rate", type=int, default=10_000, help="alerts per second")
    ap.add_argument("--duration", type=int, default=30, help="seconds of stream (the issue's: 60)")
    ap.add_argument("--batch", type=int, default=1000, help="alerts per POST")
    ap.add_argument("--posters", type=int, default=4, help="concurrent connections")
    ap.add_argument("--distinct", type=int, default=50_000, help="distinct alerts (2 per group)")
    ap.add_argument("--markers", type=int, default=20, help="marker alerts for the notification latency")
    ap.add_argument("--groups-timeout", type=float, default=60, help="seconds for GET /api/v2/alerts/groups")
    ap.add_argument("--only", choices=["opsloop", "alertmanager"])
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if args.sink:
        run_sink(args.sink)
        return 0

    if args.only != "opsloop" and not os.path.exists(ALERTMANAGER):
        say(f"setup: {ALERTMANAGER} is missing (apt-get install prometheus-alertmanager)")
        return 2
    binary = setup_opsloop(args) if args.only != "alertmanager" else None
    work = tempfile.mkdtemp(prefix="opsloop-bench-alerting-")
    say(f"work directory: {work}")
    bodies = batches(args.distinct, args.batch)
    sizes = [len(json.loads(b)) for b in bodies]
    sink = None
    results = {}
    try:
        sink = Sink(work)
        config = os.path.join(work, "alertmanager.yml")
        with open(config, "w") as f:
            f.write(alertmanager_yaml(sink.url))
        if args.only != "alertmanager":
            results["opsloop"] = run_one("opsloop", lambda: start_opsloop(binary, work, config), args, bodies,
                                         sizes, sink)
        if args.only != "opsloop":
            results["Alertmanager"] = run_one("Alertmanager", lambda: start_alertmanager(work, config), args,
                                              bodies, sizes, sink)
    except (RuntimeError, OSError) as e:
        say(f"failed: {e}")
        return 2
    finally:
        stop(sink.process if sink else None)
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    o, p = results.get("opsloop", {}), results.get("Alertmanager", {})
    print(f"\nalerting: {args.rate} alerts/s for {args.duration} s in batches of {args.batch} from {args.posters} "
          f"connections, {args.distinct} distinct alerts in {args.distinct // 2} groups (group_by [group]), "
          f"group_wait {GROUP_WAIT:.0f}s, {args.markers} markers\n")
    print("machine: load average %.1f %.1f %.1f at the end (2 cores shared: compare the ratios)\n" % os.getloadavg())
    print(f"  {'':<46} {'opsloop':>14} {'Alertmanager':>14} {'':<8} {'ratio':>7}")
    row("alerts accepted per second", o.get("alerts_per_s"), p.get("alerts_per_s"), "alerts/s", "{:.0f}")
    row("  alerts accepted / posted",
        f"{o.get('accepted_alerts')}/{o.get('posted_alerts')}" if o else None,
        f"{p.get('accepted_alerts')}/{p.get('posted_alerts')}" if p else None, "")
    row("POST latency p50", o.get("post_p50_ms"), p.get("post_p50_ms"), "ms")
    row("POST latency p99", o.get("post_p99_ms"), p.get("post_p99_ms"), "ms")
    row("POST latency max", o.get("post_max_ms"), p.get("post_max_ms"), "ms")
    row("  server side p50 <= (opsloop /metrics bucket)", o.get("post_server_p50_le_ms"), None, "ms")
    row("  server side p99 <= (opsloop /metrics bucket)", o.get("post_server_p99_le_ms"), None, "ms")
    row("CPU during the stream", o.get("cpu_cores"), p.get("cpu_cores"), "cores", "{:.2f}")
    row("RSS, peak", o.get("rss_peak_mb"), p.get("rss_peak_mb"), "MB", "{:.0f}")
    row("RSS, median during the stream", o.get("rss_median_mb"), p.get("rss_median_mb"), "MB", "{:.0f}")
    gshow = lambda r: r.get("groups_s") if r.get("groups_s") is not None else (r.get("groups_note") or None)
    row("GET /api/v2/alerts/groups", gshow(o), gshow(p), "s", "{:.2f}")
    row("  groups listed", o.get("groups"), p.get("groups"), "", "{:.0f}")
    row("  alerts in them", o.get("groups_alerts"), p.get("groups_alerts"), "", "{:.0f}")
    row("alert in -> first notification, p50", o.get("marker_p50_s"), p.get("marker_p50_s"), "s", "{:.3f}")
    row("alert in -> first notification, p99", o.get("marker_p99_s"), p.get("marker_p99_s"), "s", "{:.3f}")
    row("alert in -> first notification, max", o.get("marker_max_s"), p.get("marker_max_s"), "s", "{:.3f}")
    row("  markers notified / posted",
        f"{o.get('markers_notified')}/{o.get('markers_posted')}" if o else None,
        f"{p.get('markers_notified')}/{p.get('markers_posted')}" if p else None, "")
    row("notifications the sink received", o.get("notifications"), p.get("notifications"), "", "{:.0f}")

    met = True
    if o:
        print("\ntargets (opsloop):")
        for key, (limit, higher) in TARGETS.items():
            value = o.get(key)
            ok = value is not None and (value >= RATE_SLACK * limit if higher else value <= limit)
            met &= ok
            print(f"  {key:<16} {'-' if value is None else f'{value:.3f}':>10}  {'>=' if higher else '<='} {limit:<8} "
                  f"{'met' if ok else 'NOT MET'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
