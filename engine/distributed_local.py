"""Ranks on one host meet before each exchange without burning CPU.

MLX's ring backend waits for a peer by polling its non-blocking sockets (``recv`` until it stops
returning ``EAGAIN``): a rank that reaches a collective early spins at up to a full core until the
slowest rank arrives. Ranks that share a host (``-n 2`` on one machine, or several ranks per Mac) first
meet here: each marks its arrival with a file in a directory private to the job and sleeps until
every local peer's mark is there, and only then enters the collective, which then completes at
once. Ranks on other hosts are still waited for inside the collective.

The wait also watches the local peers' processes: a peer that died before arriving stops this rank
with one line naming it (the collective alone would fail too, but only once it is entered).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from engine.errors import LazarusError


class PeerGone(LazarusError):
    exit_code = 1


class LocalMeeting:
    def __init__(self, rank: int, peers: list[int], directory: Path) -> None:
        import atexit

        self.rank, self.peers, self.dir = rank, [k for k in peers if k != rank], directory
        self.count = 0
        _sweep(directory.parent)
        self.dir.mkdir(mode=0o700, exist_ok=True)
        (self.dir / f"pid.{rank}").write_text(str(os.getpid()))
        atexit.register(self.close)
        _on_sigterm(self.close)

    @classmethod
    def for_job(cls, rank: int) -> LocalMeeting | None:
        """The meeting of this rank's local peers (ring hostfile), or None when it has none."""
        path = os.environ.get("MLX_HOSTFILE")
        if not path:
            return None
        try:
            text = Path(path).read_text()
            hosts = json.loads(text or "[]")
            ip = [h[0].rsplit(":", 1)[0] if h else "" for h in hosts]
            peers = [k for k, x in enumerate(ip) if x == ip[rank]]
        except (OSError, ValueError, IndexError, TypeError, AttributeError):
            return None
        if len(peers) < 2:
            return None
        # one directory per job: the same hostfile (ports) started by the same launcher process
        key = hashlib.sha256(f"{text}|{os.getppid()}|{os.getuid()}".encode()).hexdigest()[:16]
        try:
            return cls(rank, peers, Path(tempfile.gettempdir()) / f"lazarus-ranks-{key}")
        except OSError:
            return None

    def arrive(self) -> None:
        """Mark this rank's arrival at the next exchange; return when every local peer has arrived."""
        self.count += 1
        n = self.count
        try:
            (self.dir / f"{n}.{self.rank}").touch()
            (self.dir / f"{n - 1}.{self.rank}").unlink(missing_ok=True)
        except OSError:
            return
        waiting = list(self.peers)
        last_check = time.monotonic()
        while waiting:
            waiting = [k for k in waiting if not (self.dir / f"{n}.{k}").exists()
                       and not (self.dir / f"{n + 1}.{k}").exists()]
            if not waiting:
                break
            time.sleep(0.01)
            if time.monotonic() - last_check > 2.0:  # the launcher usually notices first and says so
                last_check = time.monotonic()
                for k in waiting:
                    if not _alive(self.dir / f"pid.{k}"):
                        raise PeerGone(f"rank {k} stopped before the exchange (its process is gone); "
                                       "finished work is kept for the rerun")

    def close(self) -> None:
        for p in (self.dir / f"{self.count}.{self.rank}", self.dir / f"pid.{self.rank}"):
            try:
                p.unlink(missing_ok=True)
            except OSError:
                pass
        try:
            self.dir.rmdir()
        except OSError:
            pass


def _sweep(tmp: Path) -> None:
    """Remove meeting directories whose ranks are all gone (a rank killed with SIGKILL leaves its files)."""
    import shutil

    try:
        dirs = [d for d in tmp.glob("lazarus-ranks-*") if d.is_dir() and d.stat().st_uid == os.getuid()]
    except OSError:
        return
    for d in dirs:
        try:
            pids = list(d.glob("pid.*"))
            if time.time() - d.stat().st_mtime > 60 and not any(_alive(p) for p in pids):
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            continue


def _on_sigterm(cleanup) -> None:
    """The launcher stops the other ranks with SIGTERM when one fails: leave no files behind, and exit
    as SIGTERM would (quietly; the launcher reports the failure)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        return

    def handler(signum, frame) -> None:
        cleanup()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return True  # not written yet
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
