"""Our own processes: started with their log under target/bench/logs, stopped by PID (never
by name), waited for by a condition; and the CPU and memory accounting read from /proc.
Nothing here knows what the processes are."""

import os
import resource
import signal
import socket
import subprocess
import time

from .context import ROOT, WORK, Skip

CLK_TCK = os.sysconf("SC_CLK_TCK")


PROCS = []  # (name, Popen)


def start(name, argv, env=None, stdout=None, cwd=None):
    logf = open(os.path.join(WORK, "logs", f"{name}.log"), "ab")
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    p = subprocess.Popen(argv, env=full_env, cwd=cwd or ROOT, stdin=subprocess.DEVNULL,
                         stdout=stdout if stdout is not None else logf, stderr=logf,
                         start_new_session=True)
    PROCS.append((name, p))
    return p


def stop(p, timeout=10):
    if p.poll() is None:
        try:
            os.kill(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(5)
    for i, (_, q) in enumerate(PROCS):
        if q is p:
            del PROCS[i]
            break


def stop_all():
    for _, p in reversed(list(PROCS)):
        try:
            stop(p)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(what, pred, proc=None, timeout=30, logname=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            raise Skip(f"{what} exited during start-up (code {proc.returncode}){tail(logname)}")
        time.sleep(0.1)
    raise Skip(f"{what} not ready within {timeout} s{tail(logname)}")


def read_log(logname):
    """The whole log of one of our processes (target/bench/logs/<logname>.log)."""
    try:
        with open(os.path.join(WORK, "logs", f"{logname}.log"), errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def tail(logname, n=6):
    """The last n lines of a log, as a suffix for a reason."""
    if not logname:
        return ""
    lines = read_log(logname).splitlines()[-n:]
    return " | log: " + " / ".join(lines) if lines else ""


def proc_tree(pid):
    """pid plus all its descendants (for nginx / apache masters and their workers)."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
                ppid = int(st[st.rindex(")") + 2:].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_ticks(pids):
    total = {}
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            total[p] = int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)
        except (OSError, ValueError):
            pass
    return total


def system_busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...; irq/softirq left out: on loopback
    # they are mostly our own packets, not attributed to any process
    return v[0] + v[1] + v[2] + (v[7] if len(v) > 7 else 0)


def ours_ticks():
    """CPU ticks of every process tree this run started (servers, providers, Redis)."""
    pids = set()
    for _, p in PROCS:
        if p.poll() is None:
            pids.update(proc_tree(p.pid))
    return cpu_ticks(pids)


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def own_cpu_s():
    """CPU of the benchmark's own process (a client it runs itself, e.g. the WebSocket part's)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Contention:
    """CPU used on the machine during an interval by processes NOT started by this run, nor
    by the run itself (e.g. a compiler running in parallel): such runs are not comparable."""

    def __enter__(self):
        self.t0 = time.monotonic()
        self.sys0, self.ours0, self.kids0 = system_busy_ticks(), ours_ticks(), children_cpu_s()
        self.self0 = own_cpu_s()
        return self

    def __exit__(self, *exc):
        wall = time.monotonic() - self.t0
        ours1 = ours_ticks()
        ours = sum(v - self.ours0.get(p, 0) for p, v in ours1.items()) / CLK_TCK
        busy = (system_busy_ticks() - self.sys0) / CLK_TCK
        kids = children_cpu_s() - self.kids0  # wrk
        own = own_cpu_s() - self.self0
        self.system_percent = 100.0 * busy / wall
        self.foreign_percent = max(0.0, 100.0 * (busy - ours - kids - own) / wall)
        return False


class CpuMeter:
    """CPU time of a process tree (or of several: a list of PIDs) over an interval, from
    /proc/<pid>/stat."""

    def __init__(self, root_pid):
        self.roots = root_pid if isinstance(root_pid, (list, tuple)) else [root_pid]

    def _pids(self):
        return [p for root in self.roots for p in proc_tree(root)]

    def __enter__(self):
        self.t0 = time.monotonic()
        self.c0 = cpu_ticks(self._pids())
        return self

    def __exit__(self, *exc):
        self.wall = time.monotonic() - self.t0
        c1 = cpu_ticks(self._pids())
        # processes present at both ends; new ones count from zero
        self.cpu_s = sum(v - self.c0.get(p, 0) for p, v in c1.items()) / CLK_TCK
        self.percent = 100.0 * self.cpu_s / self.wall if self.wall > 0 else None
        return False


def status_mb(pid, field):
    """A memory figure of /proc/<pid>/status (VmHWM, VmRSS) in MB, None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def vm_hwm_mb(pid):
    """Peak resident memory of a process, MB."""
    return status_mb(pid, "VmHWM")


def vm_rss_mb(pid):
    """Resident memory of a process now, MB."""
    return status_mb(pid, "VmRSS")


def count_in_log(name, needle):
    try:
        with open(os.path.join(WORK, "logs", f"{name}.log"), errors="replace") as f:
            return sum(1 for line in f if needle in line)
    except OSError:
        return 0
