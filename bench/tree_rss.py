"""Run a command and report its wall time and the peak summed RSS of its whole process tree.

The suite's memory budget (issue 14: `.ci/run` ≤ 6 GB) counts every process at once: pytest's
workers, the CLI subprocesses they start, the distributed ranks. ``/usr/bin/time`` reports only the
largest single process. This samples /proc every 0.5 s and sums the RSS of the command and all
its descendants (pages shared between processes count once per process: an upper bound).

    python3 bench/tree_rss.py .ci/run
    python3 bench/tree_rss.py make test

Linux only (reads /proc). Prints the peak, the processes that made it up, and the largest
single processes seen.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    return kids


def _tree(root: int) -> list[int]:
    kids, out, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += kids.get(pid, [])
    return out


def _sample(pid: int) -> tuple[int, str] | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * PAGE
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:140]
    except (OSError, IndexError, ValueError):
        return None
    return rss, cmd


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: python3 bench/tree_rss.py COMMAND [ARG...]", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    proc = subprocess.Popen(sys.argv[1:])
    peak, at_peak, largest = 0, [], {}
    while proc.poll() is None:
        rows = [(s[0], pid, s[1]) for pid in _tree(proc.pid) if (s := _sample(pid)) is not None]
        total = sum(r for r, _, _ in rows)
        if total > peak:
            peak, at_peak = total, sorted(rows, reverse=True)
        for rss, pid, cmd in rows:
            largest[(pid, cmd)] = max(largest.get((pid, cmd), 0), rss)
        time.sleep(0.5)
    wall = time.perf_counter() - t0
    gib = 2**30
    print(f"exit {proc.returncode}, wall {wall // 60:.0f} min {wall % 60:.0f} s, "
          f"peak tree RSS {peak / gib:.2f} GiB", file=sys.stderr)
    for rss, pid, cmd in at_peak[:6]:
        print(f"  at the peak: {rss / gib:5.2f} GiB  {pid} {cmd}", file=sys.stderr)
    for (pid, cmd), rss in sorted(largest.items(), key=lambda kv: -kv[1])[:6]:
        print(f"  largest:     {rss / gib:5.2f} GiB  {pid} {cmd}", file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
