#!/usr/bin/env python3
"""opsloop's synthetic checks and heartbeats under load, on this machine. No peer: Gatus is not
installable here, so the figures stand against the issue's targets only.

  checks      --checks HTTP checks (default 2,000) at --interval (10 s), i.e. 200 checks/s, from a
              Gatus-format file (`endpoints:` with name, url, interval, conditions
              ['[STATUS] == 200']) given to `opsloop serve --checks-config`, against local HTTP
              servers (an asyncio process answering 200 {"status":"UP"} on --ports ports, keep-alive,
              logging each request's arrival per check). After --warmup s, over --measure s (60):
              opsloop's CPU (utime + stime from /proc/PID/stat, fraction of one core), RSS above
              idle (idle = the same binary serving with no checks file, median over 10 s), the
              checks run per second, and the scheduling delay: for every check, each gap between
              two consecutive arrivals at the server minus the interval, |gap - 10 s| (p50, p99,
              max). Targets: <= 15% of a core, <= 40 MB above idle, p99 <= 100 ms.
  heartbeats  --ping-rate pings/s (default 10,000) for --ping-duration s (10) to POST /ping/<token>
              (the token from GET /api/v1/checks as admin: heartbeats[].ping_url), from
              --ping-procs processes x --ping-conns keep-alive connections each, paced on one
              schedule (a late connection sends at once: the latency is from its send). Achieved
              rate and p50/p99 latency; target p99 <= 5 ms at 10,000/s. Run while the checks run.

The load generators share the 2 cores with opsloop; their own CPU is printed beside.

Usage: bench/checks.py [--bin PATH | --skip-build] [--checks N] [--interval S] [--warmup S]
                       [--measure S] [--ping-rate N] [--ping-duration S] [--ping-procs N]
                       [--ping-conns N] [--json FILE] [--keep]
Exit status: 0 when every target is met, 1 otherwise, 2 when the setup failed.
"""
import argparse, asyncio, json, multiprocessing, os, shutil, socket, statistics, subprocess, sys, tempfile
import threading, time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")

TARGETS = {  # figure: (limit, higher is better)
    "cpu_cores": (0.15, False),
    "rss_above_idle_mb": (40, False),
    "sched_p99_ms": (100, False),
    "ping_per_s": (10_000, True),
    "ping_p99_ms": (5, False),
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


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def proc_rss(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# --- the checked servers: one asyncio process (`--serve PORT,PORT,...`), HTTP/1.1 keep-alive;
# `GET /c/<i>` answers {"status":"UP"} and logs (i, arrival); `GET /__arrivals` hands the log
# over (and clears it).

ANSWER = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{"status":"UP"}'


def run_servers(ports):
    arrivals = []

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                now = time.time()
                line = head.split(b"\r\n", 1)[0].split(b" ")
                path = line[1] if len(line) > 1 else b"/"
                length = 0
                for h in head.split(b"\r\n")[1:]:
                    if h[:15].lower() == b"content-length:":
                        length = int(h[15:].strip() or 0)
                if length:
                    await reader.readexactly(length)
                if path.startswith(b"/c/"):
                    arrivals.append((int(path[3:]), now))
                    writer.write(ANSWER)
                elif path == b"/__arrivals":
                    body = json.dumps(arrivals).encode()
                    arrivals.clear()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                 + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
                    await writer.drain()
                    break
                else:
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def main():
        servers = [await asyncio.start_server(handle, "127.0.0.1", p, backlog=1024) for p in ports]
        print("ready", flush=True)
        await asyncio.gather(*(s.serve_forever() for s in servers))

    asyncio.run(main())


# --- heartbeat pings: raw keep-alive sockets, one thread per connection, in several processes


def ping_worker(port, path, rate, duration, conns, start_at, out):
    request = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n".encode()
    interval = conns / rate  # each connection's share of the schedule
    lock = threading.Lock()
    lat, ok, bad, last = [], [0], [0], [0.0]

    def conn_loop(c):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mine, n = [], 0
        good = fail = 0
        offset = c * interval / conns
        while True:
            due = start_at + offset + n * interval
            if due - start_at >= duration:
                break
            n += 1
            wait = due - time.time()
            if wait > 0:
                time.sleep(wait)
            t0 = time.perf_counter()
            s.sendall(request)
            buf = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    raise ConnectionError("closed")
                buf += chunk
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    continue
                head = buf[:end].lower()
                i = head.find(b"content-length:")
                length = int(head[i + 15:].split(b"\r\n", 1)[0]) if i >= 0 else 0
                if len(buf) >= end + 4 + length:
                    break
            mine.append(time.perf_counter() - t0)
            if buf.startswith(b"HTTP/1.1 200"):
                good += 1
            else:
                fail += 1
        s.close()
        with lock:
            last[0] = max(last[0], time.time())
            lat.extend(mine)
            ok[0] += good
            bad[0] += fail

    threads = [threading.Thread(target=conn_loop, args=(c,)) for c in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((lat, ok[0], bad[0], last[0]))


def ping_load(port, path, args):
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    start_at = time.time() + 1.0
    per_proc = args.ping_rate / args.ping_procs
    procs = [ctx.Process(target=ping_worker, args=(port, path, per_proc, args.ping_duration, args.ping_conns,
                                                   start_at + p * 0.0003, out)) for p in range(args.ping_procs)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    end = max(r[3] for r in results)  # the last answer, not the processes' exit
    lat = [x for r in results for x in r[0]]
    ok = sum(r[1] for r in results)
    bad = sum(r[2] for r in results)
    wall = end - start_at
    return {"ping_sent": len(lat), "ping_ok": ok, "ping_failed": bad, "ping_wall_s": wall,
            "ping_per_s": ok / wall, "ping_p50_ms": percentile(lat, 50) * 1000 if lat else None,
            "ping_p99_ms": percentile(lat, 99) * 1000 if lat else None,
            "ping_max_ms": max(lat) * 1000 if lat else None}


# --- opsloop


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


def start_opsloop(binary, work, name, checks_config=None):
    data = os.path.join(work, f"{name}-data")
    port = free_port()
    log = open(os.path.join(work, f"{name}.log"), "w")
    cmd = [binary, "serve", "--listen", f"127.0.0.1:{port}", "--proxy-listen", "127.0.0.1:0", "--data-dir", data]
    if checks_config:
        cmd += ["--checks-config", checks_config]
    process = subprocess.Popen(cmd, stdout=log, stderr=log,
                               env={**os.environ, "OPSLOOP_LOG_LEVEL": "warn", "NO_COLOR": "1"})
    if not wait_http(f"http://127.0.0.1:{port}/healthz"):
        raise RuntimeError(f"opsloop did not start; see {log.name}")
    made = subprocess.run([binary, "admin", "token", "create", "--name", "bench", "--role", "admin",
                           "--data-dir", data], capture_output=True, text=True)
    if made.returncode != 0:
        raise RuntimeError(f"opsloop admin token create: {made.stderr}")
    return process, port, made.stdout.strip()


def stop(process):
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def checks_yaml(n, interval, ports):
    lines = ["endpoints:"]
    for i in range(n):
        lines += [f"  - name: check-{i:05}", f"    url: http://127.0.0.1:{ports[i % len(ports)]}/c/{i}",
                  f"    interval: {interval}s", "    conditions: ['[STATUS] == 200']"]
    lines += ["heartbeats:", "  - name: bench-heartbeat", "    period: 1h"]
    return "\n".join(lines) + "\n"


def arrivals(port):
    return json.loads(http(f"http://127.0.0.1:{port}/__arrivals", timeout=30))


def sched_delays(log, interval, since, until):
    by_check = {}
    for i, t in log:
        by_check.setdefault(i, []).append(t)
    delays = []
    for times in by_check.values():
        times.sort()
        for a, b in zip(times, times[1:]):
            if since <= b <= until:
                delays.append(abs((b - a) - interval))
    return delays, len(by_check)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--bin", help="the opsloop binary to run (default: build --profile dist)")
    ap.add_argument("--skip-build", action="store_true", help="use the dist binary already built")
    ap.add_argument("--checks", type=int, default=2000)
    ap.add_argument("--interval", type=int, default=10, help="seconds between runs of a check")
    ap.add_argument("--ports", type=int, default=4, help="ports the checked server listens on")
    ap.add_argument("--warmup", type=int, default=25, help="seconds before measuring")
    ap.add_argument("--measure", type=int, default=60, help="seconds measured")
    ap.add_argument("--ping-rate", type=int, default=10_000)
    ap.add_argument("--ping-duration", type=int, default=10)
    ap.add_argument("--ping-procs", type=int, default=2)
    ap.add_argument("--ping-conns", type=int, default=16, help="connections per ping process")
    ap.add_argument("--skip-pings", action="store_true")
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if args.serve:
        run_servers([int(p) for p in args.serve.split(",")])
        return 0

    binary = setup_opsloop(args)
    work = tempfile.mkdtemp(prefix="opsloop-bench-checks-")
    say(f"work directory: {work}")
    servers = idle_proc = proc = None
    r = {}
    try:
        # Idle: the same server without a checks file.
        idle_proc, _, _ = start_opsloop(binary, work, "idle")
        time.sleep(3)
        idle = []
        for _ in range(20):
            idle.append(proc_rss(idle_proc.pid))
            time.sleep(0.5)
        r["idle_rss_mb"] = statistics.median(idle)
        stop(idle_proc)
        say(f"idle RSS: {r['idle_rss_mb']:.1f} MB")

        ports = [free_port() for _ in range(args.ports)]
        servers = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", ",".join(map(str, ports))],
                                   stdout=subprocess.PIPE, text=True)
        servers.stdout.readline()
        config = os.path.join(work, "checks.yaml")
        with open(config, "w") as f:
            f.write(checks_yaml(args.checks, args.interval, ports))
        proc, port, token = start_opsloop(binary, work, "checks", config)
        say(f"{args.checks} checks every {args.interval} s; warm-up {args.warmup} s")
        time.sleep(args.warmup)
        arrivals(ports[0])  # drop the warm-up's log
        rss = []
        cpu0, scpu0, t0 = proc_cpu(proc.pid), proc_cpu(servers.pid), time.time()
        say(f"measuring {args.measure} s")
        while time.time() - t0 < args.measure:
            rss.append(proc_rss(proc.pid))
            time.sleep(0.5)
        t1 = time.time()
        cpu1, scpu1 = proc_cpu(proc.pid), proc_cpu(servers.pid)
        log = arrivals(ports[0])
        delays, seen = sched_delays(log, args.interval, t0 + args.interval, t1)
        r.update({
            "cpu_cores": (cpu1 - cpu0) / (t1 - t0), "server_cpu_cores": (scpu1 - scpu0) / (t1 - t0),
            "rss_median_mb": statistics.median(rss), "rss_peak_mb": max(rss),
            "rss_above_idle_mb": statistics.median(rss) - r["idle_rss_mb"],
            "rss_peak_above_idle_mb": max(rss) - r["idle_rss_mb"],
            "checks_per_s": len(log) / (t1 - t0), "checks_seen": seen, "gaps": len(delays),
            "sched_p50_ms": percentile(delays, 50) * 1000 if delays else None,
            "sched_p99_ms": percentile(delays, 99) * 1000 if delays else None,
            "sched_max_ms": max(delays) * 1000 if delays else None,
        })
        try:
            listed = json.loads(http(f"http://127.0.0.1:{port}/api/v1/checks", token))
            r["checks_up"] = sum(1 for c in listed.get("checks", []) if c.get("health") == "up")
        except (OSError, ValueError) as e:
            say(f"GET /api/v1/checks: {e}")
        say(f"checks: {r['cpu_cores']:.3f} cores, RSS {r['rss_median_mb']:.0f} MB, {r['checks_per_s']:.0f} checks/s")

        if not args.skip_pings:
            listed = json.loads(http(f"http://127.0.0.1:{port}/api/v1/checks", token))
            url = listed["heartbeats"][0]["ping_url"]
            path = "/" + url.split("//", 1)[1].split("/", 1)[1]
            http_ok = urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"",
                                                                    method="POST"), timeout=5).read()
            say(f"one ping: {http_ok!r}; {args.ping_rate} pings/s for {args.ping_duration} s "
                f"({args.ping_procs} x {args.ping_conns} connections)")
            hist0 = server_histogram(port, "POST", "/ping/{token}")
            pcpu0, pt0 = proc_cpu(proc.pid), time.time()
            r.update(ping_load(port, path, args))
            r["ping_cpu_cores"] = (proc_cpu(proc.pid) - pcpu0) / (time.time() - pt0)
            hist1 = server_histogram(port, "POST", "/ping/{token}")
            for q in (50, 99):
                le, _ = server_quantile(hist0, hist1, q / 100)
                r[f"ping_server_p{q}_le_ms"] = None if le is None else le * 1000
            r["rss_peak_after_pings_mb"] = proc_rss(proc.pid)
    except (RuntimeError, OSError, KeyError, IndexError) as e:
        say(f"failed: {e}")
        return 2
    finally:
        stop(idle_proc)
        stop(proc)
        stop(servers)
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    f = lambda v, fmt="{:.1f}": "-" if v is None else fmt.format(v)
    print(f"\nchecks: {args.checks} HTTP checks every {args.interval} s ({args.checks / args.interval:.0f}/s) "
          f"against a local asyncio server on {args.ports} ports; {args.warmup} s warm-up, {args.measure} s measured")
    print("no peer: Gatus is not installable on this machine; the figures stand against the targets")
    print("machine: load average %.1f %.1f %.1f at the end (the scheduling delay suffers first)\n" % os.getloadavg())
    print(f"  {'CPU (opsloop)':<44} {f(r.get('cpu_cores'), '{:.3f}'):>10} cores")
    print(f"  {'CPU (the checked server, for scale)':<44} {f(r.get('server_cpu_cores'), '{:.3f}'):>10} cores")
    print(f"  {'RSS idle (no checks file)':<44} {f(r.get('idle_rss_mb')):>10} MB")
    print(f"  {'RSS with checks, median / peak':<44} {f(r.get('rss_median_mb')):>10} / {f(r.get('rss_peak_mb'))} MB")
    print(f"  {'RSS above idle, median / peak':<44} {f(r.get('rss_above_idle_mb')):>10} / "
          f"{f(r.get('rss_peak_above_idle_mb'))} MB")
    print(f"  {'checks run per second (at the server)':<44} {f(r.get('checks_per_s')):>10}")
    print(f"  {'checks up (GET /api/v1/checks)':<44} {f(r.get('checks_up'), '{:.0f}'):>10}")
    print(f"  {'|gap - interval|, p50 / p99 / max':<44} {f(r.get('sched_p50_ms')):>10} / {f(r.get('sched_p99_ms'))} / "
          f"{f(r.get('sched_max_ms'))} ms  ({r.get('gaps', 0)} gaps)")
    if not args.skip_pings:
        print(f"\nheartbeats: POST /ping/<token>, {args.ping_rate}/s for {args.ping_duration} s from {args.ping_procs} "
              f"processes x {args.ping_conns} keep-alive connections\n")
        print(f"  {'pings answered 200 per second':<44} {f(r.get('ping_per_s'), '{:.0f}'):>10}  "
              f"({r.get('ping_ok')} ok, {r.get('ping_failed')} failed)")
        print(f"  {'latency p50 / p99 / max':<44} {f(r.get('ping_p50_ms'), '{:.2f}'):>10} / "
              f"{f(r.get('ping_p99_ms'), '{:.2f}')} / {f(r.get('ping_max_ms'), '{:.2f}')} ms")
        print(f"  {'server side (opsloop /metrics), p50 / p99 <=':<44} {f(r.get('ping_server_p50_le_ms'), '{:.1f}'):>10} / "
              f"{f(r.get('ping_server_p99_le_ms'), '{:.1f}')} ms  (histogram bucket bounds)")
        print(f"  {'CPU (opsloop) during the pings':<44} {f(r.get('ping_cpu_cores'), '{:.2f}'):>10} cores")
    met = True
    print("\ntargets:")
    for key, (limit, higher) in TARGETS.items():
        if key.startswith("ping") and args.skip_pings:
            continue
        value = r.get(key)
        ok = value is not None and (value >= RATE_SLACK * limit if higher else value <= limit)
        met &= ok
        print(f"  {key:<18} {f(value, '{:.3f}'):>10}  {'>=' if higher else '<='} {limit:<8} {'met' if ok else 'NOT MET'}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"args": vars(args), "results": r}, out, indent=2)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
