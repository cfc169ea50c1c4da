#!/usr/bin/env python3
"""Measures issue 4's agent target on the `dist` build of opsloop (fat LTO), on this machine.

  1,000 queued trivial jobs drained by 4 agents (`opsloop agent`, 4 jobs at once each):
  server CPU per job (user + system time of the server process over the drain)   target <= 10 ms

The pipeline has one stage of 1,000 `true` jobs, all queued for the agents at once
(`[ci] executor = "agents"`). The agents run on this machine too, so the wall time includes
their work on the same 2 cores; the CPU figure is the server's alone, from /proc.

Usage: bench/agents.py [--skip-build] [--jobs N]
Prints a table and exits 1 when the target is missed. Every figure is from this run.
"""
import argparse, json, os, shutil, socket, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_DIR = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET_DIR, "dist", "opsloop")
GIT = ["git", "-c", "user.email=bench@example.invalid", "-c", "user.name=bench", "-c", "init.defaultBranch=main"]
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat; after the command name they are 11 and 12.
    return (int(fields[11]) + int(fields[12])) / TICKS


def wait_ready(base, deadline_s=30):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.01)
    sys.exit("the server did not become ready")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    if not args.skip_build:
        subprocess.run(["cargo", "build", "--profile", "dist", "-p", "opsloop"], cwd=ROOT, check=True)

    work = tempfile.mkdtemp(prefix="opsloop-bench-agents-")
    processes = []
    try:
        data_dir = os.path.join(work, "data")
        config = os.path.join(work, "opsloop.toml")
        with open(config, "w") as file:
            file.write('[ci]\nexecutor = "agents"\n')
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [BIN, "serve", "--data-dir", data_dir, "--listen", f"127.0.0.1:{port}", "--config", config,
             "--log-level", "warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"})
        processes.append(server)
        wait_ready(base)
        token = subprocess.run([BIN, "admin", "token", "create", "--data-dir", data_dir, "--name", "bench",
                                "--role", "admin"], capture_output=True, text=True, check=True).stdout.strip()
        env = {**os.environ, "OPSLOOP_SERVER": base, "OPSLOOP_TOKEN": token, "NO_COLOR": "1"}

        repo = os.path.join(work, "repo")
        os.makedirs(repo)
        with open(os.path.join(repo, ".gitlab-ci.yml"), "w") as file:
            for i in range(args.jobs):
                file.write(f"job{i}:\n  script: ['true']\n")
        subprocess.run(GIT + ["init", "-q"], cwd=repo, check=True)
        subprocess.run(GIT + ["add", "-A"], cwd=repo, check=True)
        subprocess.run(GIT + ["commit", "-qm", "many jobs"], cwd=repo, check=True)
        subprocess.run([BIN, "project", "create", "many", "--repo", repo], env=env, check=True,
                       stdout=subprocess.DEVNULL)

        for i in range(4):
            agent_token = subprocess.run(
                [BIN, "admin", "agent", "create", "--name", f"agent{i}", "--data-dir", data_dir],
                capture_output=True, text=True, check=True).stdout.strip()
            processes.append(subprocess.Popen(
                [BIN, "agent", "--server", base, "--token", agent_token, "--concurrency", "4",
                 "--work-dir", os.path.join(work, f"agent{i}")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"}))
        time.sleep(1)  # the agents register and start waiting for work

        cpu_before = cpu_seconds(server.pid)
        began = time.perf_counter()
        run = subprocess.run([BIN, "pipeline", "run", "many", "--wait", "--json"], env=env, capture_output=True,
                             text=True)
        wall = time.perf_counter() - began
        cpu = cpu_seconds(server.pid) - cpu_before
        if run.returncode != 0:
            sys.exit(f"the pipeline did not pass:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
        detail = json.loads(run.stdout)
        succeeded = sum(1 for job in detail["jobs"] if job["status"] == "success")
        if succeeded != args.jobs:
            sys.exit(f"{succeeded} of {args.jobs} jobs succeeded")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)

    per_job_ms = cpu / args.jobs * 1000
    rows = [
        (f"{args.jobs} jobs on 4 agents: wall time", f"{wall:.1f} s ({args.jobs / wall:.0f} jobs/s)", "", True),
        ("server CPU per job", f"{per_job_ms:.2f} ms ({cpu:.2f} s in all)", "<= 10 ms", per_job_ms <= 10),
    ]
    width = max(len(row[0]) for row in rows)
    for name, value, target, ok in rows:
        print(f"{name:<{width}}  {value:<32}  {target:<10}  {'ok' if ok else 'MISSED'}")
    sys.exit(0 if all(row[3] for row in rows) else 1)


if __name__ == "__main__":
    main()
