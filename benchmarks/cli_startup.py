"""Start-up cost of the command line: whole-process wall time and peak RSS of

    tfchargen --help
    tfchargen generate --model M --prompt x        (one prompt, the default 100 characters)
    tfchargen generate --server URL --prompt x     (REST, against `tfchargen serve`)

for this tree and a baseline commit, in one run: each round runs every command once per
tree, the trees' order alternating between rounds, so both see the same machine load. Each
command is a fresh ``python -m tfchargen`` process (PYTHONPATH = the tree) with no
TF_CPP_MIN_LOG_LEVEL in its environment, as a user runs it; its peak RSS is the child's own
``ru_maxrss`` (os.wait4). Also recorded: how many lines each command wrote to stderr.

The baseline tree is ``git archive BASELINE`` unpacked into a temporary directory. The model
is --model, or a tiny run trained and exported here with this tree's CLI; the REST server is
`tfchargen serve` (this tree's) in its own process.

    python benchmarks/cli_startup.py --rounds 5
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data" / "ag_news_csv" / "test.csv").resolve()


def git(*args, cwd=ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def baseline_tree(commit: str, into: pathlib.Path) -> pathlib.Path:
    """The files of ``commit`` (git archive), unpacked under ``into``."""
    tar = into / "baseline.tar"
    with open(tar, "wb") as f:
        subprocess.run(["git", "archive", commit], cwd=ROOT, check=True, stdout=f)
    tree = into / f"baseline-{commit}"
    with tarfile.open(tar) as t:
        t.extractall(tree, filter="data")
    return tree


def env_for(tree: pathlib.Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(tree)
    return env


def run(tree: pathlib.Path, args: list[str], timeout: float = 300) -> dict:
    """One fresh ``python -m tfchargen ARGS``: wall seconds, its own peak RSS, exit code and
    stderr line count."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-m", "tfchargen", *args], cwd=tree, env=env_for(tree),
                             stdout=subprocess.DEVNULL, stderr=err)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                p.kill()
                pid, status, usage = os.wait4(p.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - start
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = err.read().decode("utf-8", "replace").splitlines()
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "returncode": p.returncode,
            "stderr_lines": len(lines), "stderr_head": lines[:3]}


def tiny_export(work: pathlib.Path) -> str:
    """Trains and exports a tiny model with this tree's CLI; returns the export base."""
    run_dir, base = work / "run", work / "model"
    train = [sys.executable, "-m", "tfchargen", "train", "--preset", "tiny", "--run-dir", str(run_dir),
             "--train-data", f"csv:{DATA}[:6000]", "--steps-per-epoch", "50", "--epochs", "1",
             "--sample-every", "0", "--export-base", str(base)]
    subprocess.run(train, cwd=ROOT, env=env_for(ROOT), check=True, stdout=subprocess.DEVNULL)
    return str(base)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str) -> tuple[subprocess.Popen, str]:
    """`tfchargen serve` in its own process (this one stays small: a child's peak RSS starts
    from its parent's size until it execs); returns it and its REST address."""
    import threading

    rest = free_port()
    p = subprocess.Popen([sys.executable, "-m", "tfchargen", "serve", "--model", model, "--port", str(rest),
                          "--grpc-port", "0"], cwd=ROOT, env=env_for(ROOT),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()  # logged once it serves
    if "REST" not in line:
        p.kill()
        raise RuntimeError(f"tfchargen serve did not start: {line!r}")
    threading.Thread(target=p.stderr.read, daemon=True).start()  # its request log must not fill the pipe
    return p, f"http://127.0.0.1:{rest}"


def summary(samples: list[dict]) -> dict:
    walls = [s["wall_s"] for s in samples]
    rss = [s["peak_rss_mb"] for s in samples]
    return {"wall_s_median": statistics.median(walls), "wall_s_min": min(walls), "wall_s_max": max(walls),
            "peak_rss_mb_median": statistics.median(rss), "peak_rss_mb_min": min(rss), "peak_rss_mb_max": max(rss),
            "stderr_lines": sorted({s["stderr_lines"] for s in samples}),
            "returncodes": sorted({s["returncode"] for s in samples}), "stderr_head": samples[0]["stderr_head"],
            "wall_s": walls, "peak_rss_mb": rss}


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    return {"cores": os.cpu_count(), "cpu": model, "platform": platform.platform(),
            "python": platform.python_version(), "load_avg_at_start": os.getloadavg()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--baseline", default="6a3367a", help="commit to compare against (default %(default)s)")
    p.add_argument("--model", help="export base to generate with (default: train and export a tiny one)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cli_startup.json"))
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cli-startup-") as tmp:
        tmp = pathlib.Path(tmp)
        trees = {"baseline": baseline_tree(args.baseline, tmp), "current": ROOT}
        model = args.model or tiny_export(tmp)
        server, url = start_server(model)
        try:
            commands = {"help": ["--help"],
                        "generate_model": ["generate", "--model", model, "--prompt", "x"],
                        "generate_server": ["generate", "--server", url, "--prompt", "x"]}
            samples = {t: {c: [] for c in commands} for t in trees}
            for r in range(args.rounds):
                order = list(trees) if r % 2 == 0 else list(trees)[::-1]
                for name, cmd in commands.items():
                    for t in order:
                        s = run(trees[t], cmd)
                        samples[t][name].append(s)
                        print(f"round {r + 1} {t:8} {name:15} {s['wall_s']:6.2f} s {s['peak_rss_mb']:6.0f} MB "
                              f"rc {s['returncode']} stderr {s['stderr_lines']} lines", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=60)

    result = {
        "benchmark": "cli_startup",
        "command_line": " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git("rev-parse", "HEAD"), "uncommitted_changes": bool(git("status", "--porcelain")),
        "baseline_commit": git("rev-parse", args.baseline), "machine": machine(), "rounds": args.rounds,
        "model": "--model" if args.model else "tiny preset, 1 x 50 steps (LSTM(32)), exported by this tree",
        "commands": {k: "tfchargen " + " ".join(v) for k, v in commands.items()},
        "results": {t: {c: summary(v) for c, v in by_cmd.items()} for t, by_cmd in samples.items()},
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    for c in commands:
        b, n = result["results"]["baseline"][c], result["results"]["current"][c]
        print(f"{c:15} wall median {b['wall_s_median']:.2f} -> {n['wall_s_median']:.2f} s, "
              f"peak RSS {b['peak_rss_mb_median']:.0f} -> {n['peak_rss_mb_median']:.0f} MB, "
              f"stderr lines {b['stderr_lines']} -> {n['stderr_lines']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
