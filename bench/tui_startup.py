"""Time from `lazarus` (no flags) to an interactive screen and to the model being ready, in tmux.

    .venv/bin/python bench/tui_startup.py [--runs 3]

Starts the real app in a detached tmux session (160x50), polls the screen with
capture-pane, and records when the lens screen is drawn ("Logit lens" in the
header) and when the header says the model is loaded ("ready"). Quits with `q`
and checks the process exited.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pane(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


def one_run(session: str = "lzbench") -> tuple[float, float]:
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    t0 = time.perf_counter()
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "50",
                    f"{ROOT / '.venv/bin/lazarus'}; sleep 30"], check=True)
    screen = ready = None
    while time.perf_counter() - t0 < 120:
        text = pane(session)
        now = time.perf_counter() - t0
        if screen is None and "Logit lens" in text:
            screen = now
        if "ready" in text:
            ready = now
            break
        time.sleep(0.05)
    subprocess.run(["tmux", "send-keys", "-t", session, "q"])
    time.sleep(1.5)
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    if screen is None or ready is None:
        raise SystemExit("the app did not reach an interactive, loaded screen within 120 s")
    return screen, ready


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if shutil.which("tmux") is None:
        sys.exit("tmux is needed (apt-get install tmux)")
    runs = [one_run() for _ in range(args.runs)]
    print(f"# TUI start-up, {args.runs} runs (load average {open('/proc/loadavg').read().split()[0]})")
    print(f"interactive screen: median {statistics.median(r[0] for r in runs):.2f} s  (runs: "
          + ", ".join(f"{r[0]:.2f}" for r in runs) + ")")
    print(f"model loaded:       median {statistics.median(r[1] for r in runs):.2f} s  (runs: "
          + ", ".join(f"{r[1]:.2f}" for r in runs) + ")")


if __name__ == "__main__":
    main()
