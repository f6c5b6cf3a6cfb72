"""`lazarus-launch`: MLX's own launcher (``mlx.launch``) with three fixes for long batch jobs.

Same flags as ``mlx.launch`` (``--hosts``, ``-n``, ``--hostfile``, ``--backend``, ...); see
docs/distributed.md. What differs:

1. **No busy loop.** mlx 0.32's launcher polls the ranks' stdin pipes for writability and its own
   stdin for input with ``select``; both are always ready, so the launcher spins about half a core
   for the whole run (measured: 0.5-0.6 CPU-seconds per second). Here the ranks' stdin is not
   forwarded (no batch command reads it) and the launcher sleeps between reads of their output.
2. **Ctrl-C reaches every rank once.** The ranks run in their own session, so the terminal's
   SIGINT goes to the launcher only, which forwards it (local ranks: SIGINT; ranks over ssh: a
   ``^C`` on their terminal). Each rank then stops at the same round and rank 0 prints
   ``interrupted`` (exit 130); finished work is kept for the rerun.
3. **One line per failure, and the job's exit code.** A rank that fails says why itself (rank 0
   prints it, naming the rank); a rank that dies (a signal, an abort) gets one line here, and the
   ranks the launcher then stops get none. The exit code is rank 0's (0, 1, 2, 3 or 130), or 1 when
   rank 0 was stopped because another rank died (``mlx.launch`` always exits 0).
"""

from __future__ import annotations

import functools
import re
import select as _select_mod
import signal
import subprocess
import sys
import time


def main(argv: list[str] | None = None) -> int:
    from mlx._distributed_utils import launch

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    stdin_fd = sys.stdin.fileno() if sys.stdin is not None else -1
    ranks: list = []

    def quiet_select(r, w, x, timeout):
        r = [fd for fd in r if fd != stdin_fd]
        if not r:  # the main loop (only stdin), or a rank whose output has ended but not yet exited
            time.sleep(min(timeout, 0.1 if not w else 0.02))
            return [], [], []
        ready, _, errs = _select_mod.select(r, [], x, timeout)
        return ready, [], errs

    class Rank(launch.RemoteProcess):
        def __init__(self, rank, host, *args, **kwargs):
            super().__init__(rank, host, *args, **kwargs)
            self.rank, self.local = rank, host == "127.0.0.1"
            ranks.append(self)

    def forward_sigint(signum, frame):
        for r in ranks:
            if r.process.poll() is not None:
                continue
            try:
                if r.local:
                    r.process.send_signal(signal.SIGINT)
                else:
                    r.process.stdin.write(b"\x03")
                    r.process.stdin.flush()
            except OSError:
                pass

    said = {"failure": False}

    def rank_warning(*message, **kwargs):
        """The launcher's end-of-rank warnings: a rank that ended with a documented lazarus exit code
        has said why itself, and ranks the launcher stops after a failure are consequences; what is
        left is a rank that died (a signal, an abort): one line naming it."""
        text = " ".join(str(m) for m in message)
        m = re.match(r"Node with rank (\d+) (?:exited with code (-?\d+)|was killed)", text)
        if m is None:
            return warn(*message, **kwargs)
        if m.group(2) is None or int(m.group(2)) in (1, 2, 3, 130) or said["failure"]:
            said["failure"] = True
            return None
        said["failure"] = True
        code = int(m.group(2))
        cause = f"killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() \
            else f"exit code {code}"
        print(f"lazarus-launch: rank {m.group(1)} died ({cause}); the other ranks were stopped. Finished "
              "work is kept: rerun the command to resume.", file=sys.stderr, flush=True)
        return None

    warn = launch.log_warning
    launch.log_warning = rank_warning
    launch.select = quiet_select
    launch.RemoteProcess = Rank
    launch.Popen = functools.partial(subprocess.Popen, start_new_session=True)
    signal.signal(signal.SIGINT, forward_sigint)
    launch.main()
    codes = {}
    for r in ranks:
        rc = r.process.wait()
        codes[r.rank] = 128 - rc if rc < 0 else rc
    if not codes:
        return 1
    # rank 0 speaks for the job; when it was stopped because another rank died, the job failed (1)
    return codes[0] if codes[0] in (0, 1, 2, 3, 130) else 1


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
