"""Where the benchmark lives and what it runs: paths, the Vestibule binary, the stack
description (dev/stack.json), the log line and Skip (a measurement that cannot be made)."""

import json
import os
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORK = os.path.join(ROOT, "target", "bench")
RESULTS = os.path.join(ROOT, "bench", "results")
# --quick (the CI smoke run) uses the debug build that `cargo test` already made.
PROFILE = os.environ.get("BENCH_PROFILE", "release")
# VESTIBULE_BIN=/path/to/vestibule measures that binary instead (e.g. an old build against a new one).
VESTIBULE_BIN = os.path.abspath(os.environ.get("VESTIBULE_BIN")
                                or os.path.join(ROOT, "target", PROFILE, "vestibule"))
STORE_FILL_SRC = os.path.join(ROOT, "examples", "store_fill.rs")
STORE_FILL_BIN = os.path.join(ROOT, "target", PROFILE, "examples", "store_fill")
# The local stack's shared facts (client, users, provider defaults, Vestibule's cookie names).
with open(os.path.join(ROOT, "dev", "stack.json")) as _f:
    STACK = json.load(_f)
# What the drivers rely on in Vestibule (dev/stack.json).
SESSION_COOKIE = STACK["vestibule"]["session_cookie"]
CSRF = STACK["vestibule"]["csrf_header"]
CALLBACK = STACK["vestibule"]["callback_path"]
FOREIGN_LIMIT = 30.0  # % CPU used by processes not started by the benchmark -> run flagged
PATH = "/api/x"  # every config is loaded on this path; the upstream answers any path


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Skip(Exception):
    """A measurement that cannot be made; the message is the reason, recorded in the results."""
