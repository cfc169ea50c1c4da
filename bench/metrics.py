#!/usr/bin/env python3
"""opsloop in Prometheus's role side by side with Prometheus 2.42 (Debian's /usr/bin/prometheus),
on this machine, over the same synthetic targets (../shared/bench/prometheus/loadgen.py).

  ingest  N targets x S series at one interval for a while; each process's RSS (median and peak,
          /proc/PID/status) and CPU (utime + stime from /proc/PID/stat over the ingest window,
          as % of one core); bytes per sample on disk (the metrics data directory's size / the
          samples stored, counted by the same PromQL on both: over a short ingest that is mostly
          WAL, not compacted blocks)
  queries the four queries of ../shared/bench/README.md as instant queries at the end of the
          ingest, and one 1 h / 15 s range query (sum by job of rate), --runs times each, client
          side wall time; medians
  ratios  opsloop / Prometheus for every figure (below 1 is better for opsloop)

How opsloop gets the data: `opsloop serve --metrics-config prometheus.yml` scraping the same
targets, when it scrapes (checked first: a short run looking for `up`). When it does not (the
scrape manager not yet wired into the server), Prometheus scrapes and remote-writes everything
to opsloop's /prometheus/api/v1/write with an admin token, and the table says so: opsloop's CPU
is then that of receiving, not scraping, and Prometheus's includes sending.

Defaults finish in about 2 minutes after the build (10 targets x 5,000 series, 5 s, 60 s of
ingest); the load of the issue's targets is `--targets 40 --ingest 600` (and `--interval 1` for
its 200k samples/s). Every figure is from this run; machines are
noisy, so compare the ratios.

Usage: bench/metrics.py [--bin PATH | --skip-build] [--targets N] [--series S] [--interval S]
                        [--ingest S] [--runs N] [--keep]
Exit status: 0 when both ran and answered every query, 1 otherwise, 2 when the setup failed.
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, threading, time
import urllib.parse, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADGEN = os.path.join(os.path.dirname(ROOT), "shared", "bench", "prometheus", "loadgen.py")
PROMETHEUS = "/usr/bin/prometheus"
TICKS = os.sysconf("SC_CLK_TCK")
HISTOGRAM_SERIES = 20 + 4 * 14  # per handler: 4 methods x 5 codes counters, 4 histograms of 14
QUERIES = [
    "sum by (job) (rate(http_requests_total[1m]))",
    "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[1m])))",
    "topk(5, some_gauge)",
    'http_requests_total{handler=~"/api/v1/h1[0-9]",code=~"5.."}',
]
RANGE_QUERY = "sum by (job) (rate(http_requests_total[1m]))"


def say(text):
    print(text, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


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


class Engine:
    """One of the two: where its API is, its process, its data directory."""

    def __init__(self, name, api, process, data_dir, token=None):
        self.name, self.api, self.process, self.data_dir, self.token = name, api, process, data_dir, token
        self.rss = []
        self.cpu_start = self.cpu_end = 0.0

    def query(self, path, **params):
        url = f"{self.api}/{path}?{urllib.parse.urlencode(params)}"
        return json.loads(http(url, self.token))

    def cpu(self):
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def sample_rss(self):
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    self.rss.append(int(line.split()[1]) / 1024)


def dir_bytes(path):
    total = 0
    for base, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(base, f))
            except OSError:
                pass
    return total


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
        sys.exit(2)
    return binary


def scrape_yaml(targets, interval, remote_write=None):
    lines = [f"global: {{scrape_interval: {interval}s, scrape_timeout: {min(interval, 10)}s}}",
             "scrape_configs:", "  - job_name: loadgen",
             "    static_configs: [{targets: [" + ", ".join(f"'{t}'" for t in targets) + "]}]"]
    if remote_write:
        url, token = remote_write
        lines += ["remote_write:", f"  - url: {url}", f"    authorization: {{credentials: {token}}}",
                  "    queue_config: {max_samples_per_send: 2000, capacity: 10000}"]
    return "\n".join(lines) + "\n"


def start_opsloop(binary, work, config):
    data = os.path.join(work, "opsloop-data")
    port = free_port()
    log = open(os.path.join(work, "opsloop.log"), "w")
    process = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}", "--proxy-listen", "127.0.0.1:0", "--data-dir", data,
         "--metrics-config", config],
        stdout=log, stderr=log, env={**os.environ, "OPSLOOP_LOG_LEVEL": "warn", "NO_COLOR": "1"})
    if not wait_http(f"http://127.0.0.1:{port}/healthz"):
        raise RuntimeError(f"opsloop did not start; see {log.name}")
    made = subprocess.run([binary, "admin", "token", "create", "--name", "bench", "--role", "admin",
                           "--data-dir", data], capture_output=True, text=True)
    if made.returncode != 0:
        raise RuntimeError(f"opsloop admin token create: {made.stderr}")
    token = made.stdout.strip()
    return Engine("opsloop", f"http://127.0.0.1:{port}/prometheus/api/v1", process,
                  os.path.join(data, "metrics"), token)


def start_prometheus(work, config):
    data = os.path.join(work, "prometheus-data")
    port = free_port()
    log = open(os.path.join(work, "prometheus.log"), "w")
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={data}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log)
    if not wait_http(f"http://127.0.0.1:{port}/-/ready"):
        raise RuntimeError(f"prometheus did not start; see {log.name}")
    return Engine("Prometheus", f"http://127.0.0.1:{port}/api/v1", process, data)


def has_series(engine, query="up"):
    try:
        return bool(engine.query("query", query=query)["data"]["result"])
    except (OSError, ValueError, KeyError):
        return False


def count_samples(engine, window, at):
    """Samples stored for the loadgen job, one metric name at a time: `count_over_time` drops
    the name, and a histogram's _sum and _count would then clash."""
    total = 0.0
    names = engine.query("label/__name__/values")["data"]
    for name in names:
        answer = engine.query("query", query=f'sum(count_over_time({{__name__="{name}",job="loadgen"}}[{window}]))',
                              time=at)
        for r in answer["data"]["result"]:
            total += float(r["value"][1])
    return total


def stop(process):
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def timed(engine, path, params, runs):
    times, answer = [], None
    for _ in range(runs):
        start = time.perf_counter()
        try:
            answer = engine.query(path, **params)
        except (OSError, ValueError) as e:
            return None, f"error: {e}"
        times.append(time.perf_counter() - start)
    if answer.get("status") != "success":
        return None, f"error: {answer.get('error')}"
    return statistics.median(times), len(answer["data"]["result"])


def row(name, ours, theirs, unit, fmt="{:.1f}"):
    ratio = f"{ours / theirs:.2f}x" if ours is not None and theirs else "-"
    show = lambda v: "-" if v is None else fmt.format(v)
    print(f"  {name:<58} {show(ours):>10} {show(theirs):>11} {unit:<6} {ratio:>7}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", help="the opsloop binary to run (default: build --profile dist)")
    ap.add_argument("--skip-build", action="store_true", help="use the dist binary already built")
    ap.add_argument("--targets", type=int, default=10)
    ap.add_argument("--series", type=int, default=5000, help="series per target (about)")
    ap.add_argument("--interval", type=int, default=5, help="scrape interval, seconds")
    ap.add_argument("--ingest", type=int, default=60, help="seconds of ingest before the queries")
    ap.add_argument("--runs", type=int, default=5, help="runs of each query")
    ap.add_argument("--base-port", type=int, default=19200)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()

    if not os.path.exists(PROMETHEUS):
        say("setup: /usr/bin/prometheus is missing (apt-get install prometheus)")
        return 2
    if not os.path.exists(LOADGEN):
        say(f"setup: {LOADGEN} is missing")
        return 2
    if not all(port_free(args.base_port + i) for i in range(args.targets)):
        say(f"setup: ports {args.base_port}..{args.base_port + args.targets - 1} are not all free (--base-port)")
        return 2
    binary = setup_opsloop(args)
    handlers = max(1, min(50, args.series // HISTOGRAM_SERIES))
    gauges = max(0, args.series - handlers * HISTOGRAM_SERIES)
    work = tempfile.mkdtemp(prefix="opsloop-bench-metrics-")
    say(f"work directory: {work}")
    loadgen = opsloop = prometheus = None
    failed = False
    try:
        lifetime = args.ingest + 60 + 2 * args.runs * 30
        loadgen = subprocess.Popen(
            [sys.executable, LOADGEN, "--targets", str(args.targets), "--handlers", str(handlers), "--gauges",
             str(gauges), "--base-port", str(args.base_port), "--duration", str(lifetime)],
            stdout=subprocess.PIPE, text=True)
        say(loadgen.stdout.readline().strip())
        targets = [f"127.0.0.1:{args.base_port + i}" for i in range(args.targets)]
        scrape = os.path.join(work, "prometheus.yml")
        with open(scrape, "w") as f:
            f.write(scrape_yaml(targets, args.interval))

        began = time.time()
        opsloop = start_opsloop(binary, work, scrape)
        say(f"checking whether opsloop scrapes (up to {3 * args.interval} s)")
        end = time.monotonic() + 3 * args.interval
        scrapes = False
        while time.monotonic() < end and not scrapes:
            time.sleep(1)
            scrapes = has_series(opsloop)
        if scrapes:
            mode = "both scrape the targets"
            prometheus_config = scrape
        else:
            mode = ("opsloop does not scrape yet: Prometheus scrapes and remote-writes to opsloop's "
                    "/prometheus/api/v1/write (opsloop's CPU is receiving; Prometheus's includes sending)")
            prometheus_config = os.path.join(work, "prometheus-rw.yml")
            with open(prometheus_config, "w") as f:
                write_url = opsloop.api.rsplit("/api/v1", 1)[0] + "/api/v1/write"
                f.write(scrape_yaml(targets, args.interval, (write_url, opsloop.token)))
        say(f"mode: {mode}")
        prometheus = start_prometheus(work, prometheus_config)
        engines = [opsloop, prometheus]

        say(f"ingesting for {args.ingest} s")
        for e in engines:
            e.cpu_start = e.cpu()
        start = time.monotonic()
        while time.monotonic() - start < args.ingest:
            for e in engines:
                e.sample_rss()
            time.sleep(1)
        wall = time.monotonic() - start
        for e in engines:
            e.cpu_end = e.cpu()
        at = time.time()
        window = f"{int(at - began) + 60}s"
        stored = {}
        for e in engines:
            try:
                stored[e.name] = count_samples(e, window, at)
            except (OSError, ValueError, KeyError, IndexError) as err:
                say(f"{e.name}: counting samples failed: {err}")
                stored[e.name] = None
                failed = True

        results = {}
        for q in QUERIES:
            for e in engines:
                results[(q, e.name)] = timed(e, "query", {"query": q, "time": at}, args.runs)
        range_params = {"query": RANGE_QUERY, "start": at - 3600, "end": at, "step": 15}
        for e in engines:
            results[("range", e.name)] = timed(e, "query_range", range_params, args.runs)

        o, p = opsloop, prometheus
        print(f"\nmetrics: {args.targets} targets x {args.series} series every {args.interval} s, "
              f"{args.ingest} s of ingest, {args.runs} runs per query")
        print(f"mode: {mode}\n")
        print(f"  {'':<58} {'opsloop':>10} {'Prometheus':>11} {'':<6} {'ratio':>7}")
        row("RSS, median during ingest", statistics.median(o.rss), statistics.median(p.rss), "MB")
        row("RSS, peak", max(o.rss), max(p.rss), "MB")
        row("CPU during ingest", 100 * (o.cpu_end - o.cpu_start) / wall, 100 * (p.cpu_end - p.cpu_start) / wall,
            "% core")
        row("samples stored (loadgen job)", stored.get("opsloop"), stored.get("Prometheus"), "", "{:.0f}")
        sizes = {e.name: dir_bytes(e.data_dir) for e in engines}
        per = {n: sizes[n] / stored[n] if stored.get(n) else None for n in sizes}
        row("data directory", sizes["opsloop"] / 1e6, sizes["Prometheus"] / 1e6, "MB")
        row("bytes per sample on disk (WAL + head + blocks)", per["opsloop"], per["Prometheus"], "B", "{:.2f}")
        for q in QUERIES + ["range"]:
            label = f"range 1h/15s: {RANGE_QUERY}" if q == "range" else q
            (ot, on), (pt, pn) = results[(q, "opsloop")], results[(q, "Prometheus")]
            row(label[:58], None if ot is None else ot * 1000, None if pt is None else pt * 1000, "ms", "{:.1f}")
            if on != pn:
                print(f"  {'':<4}result sizes differ: opsloop {on}, Prometheus {pn}")
            if ot is None or pt is None:
                failed = True
    except (RuntimeError, OSError) as e:
        say(f"failed: {e}")
        failed = True
    finally:
        stop(opsloop.process if opsloop else None)
        stop(prometheus.process if prometheus else None)
        stop(loadgen)
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
