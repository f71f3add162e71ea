#!/usr/bin/env python3
"""Vestibule benchmark harness (Python 3 standard library only).

Started by bench/run, which installs the Debian packages and builds the binary first.
Everything listens on 127.0.0.1; generated configs, logs and data go to target/bench/;
results go to bench/results/latest.{json,md} (a full run of everything) or
target/bench/results/ (--quick or --only). The parts live in bench/vbench/.

Usage: python3 bench/bench.py [--quick] [--only PART[,PART...]]
  parts: direct, nginx_proxy, mod_auth_openidc, vestibule_redis, vestibule_memory,
         added-latency, refresh, scale-out, redis-latency, store-scale, credential-memory, credential-cost, dpop-cost,
         websockets, login-flood
  VESTIBULE_BIN=/path/to/vestibule measures that binary (default target/<BENCH_PROFILE>/vestibule).
Exit code 1 when anything selected could not be measured (the reasons are printed).
"""

import argparse
import os
import shutil
import signal
import sys
import time

from vbench.context import ROOT, VESTIBULE_BIN, WORK, Skip
from vbench.load import PARTS, Bench
from vbench.processes import stop_all
from vbench.report import assemble, write


def parts(text):
    """The --only list, checked against PARTS."""
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PARTS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown part(s) {', '.join(unknown) or '(none)'}; "
                                         f"choose from {', '.join(PARTS)}")
    return chosen


def fresh_work_dir():
    """Empties target/bench/ for this run, keeping earlier --quick/--only results."""
    os.makedirs(WORK, exist_ok=True)
    for entry in os.listdir(WORK):
        if entry != "results":
            path = os.path.join(WORK, entry)
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
    os.makedirs(os.path.join(WORK, "logs"))
    os.chmod(WORK, 0o755)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 run x 2 s per config, reduced extras")
    ap.add_argument("--only", type=parts, metavar="PART[,PART...]",
                    help="run only these parts (results under target/bench/results)")
    args = ap.parse_args()
    selected = args.only or PARTS

    needed = ["redis-server", "node"]
    if set(selected) - {"login-flood"}:
        needed += ["wrk", "nginx"]
    if "scale-out" in selected:
        needed += ["redis-cli"]  # redis-cli --cluster create
    for tool in needed:
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is missing (bench/run installs it)")
    if not os.access(VESTIBULE_BIN, os.X_OK):
        sys.exit(f"bench: {VESTIBULE_BIN} missing: cargo build --release --locked --bin vestibule "
                 "(or point VESTIBULE_BIN at a binary)")

    fresh_work_dir()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    t_start = time.monotonic()
    b = Bench(args.quick, selected)
    try:
        b.run()
    except Skip as e:  # the upstream every config needs did not start
        b.failures.append(f"run aborted: {e}")
    except KeyboardInterrupt:
        print("[bench] interrupted; stopping everything this run started", flush=True)
        stop_all()
        sys.exit(130)
    finally:
        stop_all()

    out = assemble(b, ",".join(args.only) if args.only else None, round(time.monotonic() - t_start, 1))
    # A quick smoke run or a partial one never replaces the published figures.
    md, results = write(out, published=not (args.quick or args.only))

    print()
    print(md)
    if b.problems:
        print("Problems seen:")
        for p in b.problems:
            print("  -", p)
    print(f"written: {os.path.relpath(results, ROOT)}/latest.json and latest.md ({out['elapsed_s']} s); "
          f"logs and generated configs: target/bench/")
    if out["unmeasured"]:
        print(f"\nbench: FAILED: {len(out['unmeasured'])} selected measurement(s) could not be made:", file=sys.stderr)
        for reason in out["unmeasured"]:
            print("  -", reason, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
