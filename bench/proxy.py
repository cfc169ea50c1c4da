#!/usr/bin/env python3
"""Measures issue 5's proxy targets: opsloop's built-in reverse proxy side by side with nginx
as a proxy, in front of the same upstream (an nginx that answers a small 200), on this machine.

  throughput (wrk -t2 -c64, requests/s)      target: opsloop >= nginx as a proxy
  p99 latency                                target: opsloop <= nginx
  proxy CPU per request (user + system)      target: <= 17 us

Usage: bench/proxy.py [--skip-build] [--seconds N] [--rounds N]
Rounds alternate upstream / nginx / opsloop; each figure is the median over the rounds.
Installs nginx and wrk with apt-get when they are missing (as root). Every figure is from
this run; machines are noisy, so compare the ratios.
"""
import argparse, os, re, shutil, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_DIR = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET_DIR, "dist", "opsloop")
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(program, package):
    if shutil.which(program) or os.path.exists(f"/usr/sbin/{program}"):
        return
    if os.geteuid() != 0:
        sys.exit(f"{program} is missing: apt-get install {package}")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def cpu_seconds(pids):
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
        except OSError:
            pass
    return total


def children(pid):
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]
    except OSError:
        return []


def wait_port(port, deadline_s=10):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    sys.exit(f"nothing listens on {port}")


def nginx(work, name, port, body):
    """An nginx answering `body` (a string), or proxying to the port `body` (an int)."""
    conf = os.path.join(work, f"{name}.conf")
    if isinstance(body, int):
        upstream = f"upstream app {{ server 127.0.0.1:{body}; keepalive 128; }}"
        location = 'proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";'
    else:
        upstream = ""
        location = f"return 200 '{body}';"
    with open(conf, "w") as f:
        f.write(f"""
worker_processes auto;
daemon off;
pid {work}/{name}.pid;
error_log {work}/{name}.error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  {upstream}
  server {{
    listen 127.0.0.1:{port} reuseport;
    location / {{ {location} }}
  }}
}}
""")
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    process = subprocess.Popen([nginx_bin, "-c", conf, "-p", work], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return process


def wrk(port, seconds):
    out = subprocess.run(["wrk", "-t2", "-c64", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0

    def ms(label):
        match = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return rps, ms("50"), ms("99"), total, errors


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    need("nginx", "nginx")
    need("wrk", "wrk")
    if not args.skip_build:
        subprocess.run(["cargo", "build", "--profile", "dist", "-p", "opsloop"], cwd=ROOT, check=True)

    work = tempfile.mkdtemp(prefix="opsloop-bench-proxy-")
    processes = []
    try:
        upstream_port, nginx_port, opsloop_port = free_port(), free_port(), free_port()
        processes.append(nginx(work, "upstream", upstream_port, "hello from the upstream\\n"))
        nginx_proxy = nginx(work, "proxy", nginx_port, upstream_port)
        processes.append(nginx_proxy)
        opsloop = subprocess.Popen([BIN, "proxy", "--listen", f"127.0.0.1:{opsloop_port}", "--route",
                                    f"/=127.0.0.1:{upstream_port}"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"})
        processes.append(opsloop)
        wait_port(opsloop_port)

        # Rounds alternate between the two proxies, and each figure is the median of its
        # rounds: this machine's noise then hits both alike.
        samples = {"upstream directly": [], "nginx as proxy": [], "opsloop proxy": []}
        targets = [("upstream directly", upstream_port, None),
                   ("nginx as proxy", nginx_port, lambda: [nginx_proxy.pid] + children(nginx_proxy.pid)),
                   ("opsloop proxy", opsloop_port, lambda: [opsloop.pid])]
        for _, port, _ in targets:
            wrk(port, 2)  # warm-up: connections, pools, caches
        for _ in range(args.rounds):
            for name, port, pids in targets:
                before = cpu_seconds(pids()) if pids else 0.0
                rps, p50, p99, total, errors = wrk(port, args.seconds)
                cpu_us = (cpu_seconds(pids()) - before) / max(total, 1) * 1e6 if pids else None
                samples[name].append((rps, p50, p99, total, errors, cpu_us))
        rows = {}
        for name, runs in samples.items():
            column = lambda i: statistics.median(r[i] for r in runs) if runs[0][i] is not None else None
            rows[name] = (column(0), column(1), column(2), sum(r[3] for r in runs), sum(r[4] for r in runs), column(5))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)

    direct = rows["upstream directly"][0]
    print(f"{'':20} {'req/s':>10} {'vs direct':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'CPU/req':>9}")
    for name, (rps, p50, p99, total, errors, cpu) in rows.items():
        cpu_text = f"{cpu:.1f} us" if cpu is not None else "-"
        print(f"{name:20} {rps:10.0f} {rps / direct:9.2f}x {p50:8.2f} {p99:8.2f} {errors:7} {cpu_text:>9}")
    ours, theirs = rows["opsloop proxy"], rows["nginx as proxy"]
    checks = [
        ("throughput >= nginx's", ours[0] >= theirs[0], f"{ours[0] / theirs[0]:.2f}x nginx"),
        ("p99 <= nginx's", ours[2] <= theirs[2], f"{ours[2]:.2f} ms vs {theirs[2]:.2f} ms"),
        ("CPU per request <= 17 us", ours[5] <= 17, f"{ours[5]:.1f} us"),
        ("no errors", ours[4] == 0, f"{ours[4]}"),
    ]
    for name, ok, value in checks:
        print(f"{name:28} {value:28} {'ok' if ok else 'MISSED'}")
    sys.exit(0 if all(ok for _, ok, _ in checks) else 1)


if __name__ == "__main__":
    main()
