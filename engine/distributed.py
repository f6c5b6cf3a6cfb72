"""Batch work spread over MLX distributed ranks (``mx.distributed``, launched with ``mlx.launch``).

A process started by a launcher (``mlx.launch``: ``MLX_RANK``; ``mpirun``: ``OMPI_COMM_WORLD_SIZE`` /
``PMI_SIZE``) joins the global group on first use of :func:`world`; any other process is rank 0 of 1
and never imports ``mx.distributed`` (a plain run behaves exactly as before).

Work is split into *items* (a batch of prompts, one prompt of an ablation study) that are computed
exactly once each, on some rank, in time-boxed rounds (:meth:`World.map_items`): each rank works
through its strided share of what is left, then every rank joins one ``all_gather`` of a small
header (status, sizes) and one of the payloads (bytes), and what is left is split again. Rank 0
stores every payload under its item index, so the output never depends on the number of ranks or on
which rank computed what, and it is the only rank that writes files or prints. Because every rank
takes part in every exchange, a cancel (Ctrl-C) or an error on any rank stops all ranks at the same
exchange, with one message naming the rank; a rank that dies closes its sockets and the others stop
with "lost the connection" instead of hanging.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.errors import Cancelled, LazarusError

OK, CANCELLED, FAILED = 0, 1, 2
_LAUNCHER_ENV = ("MLX_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


class RankFailed(LazarusError):
    """Another rank failed (or this one, reported to all): the message names the rank and the cause."""

    def __init__(self, message: str, exit_code: int = 1, reported: bool = True) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.reported = reported  # rank 0 prints it; the other ranks stay silent


def launched() -> bool:
    """True when a distributed launcher started this process (no MLX import)."""
    return any(os.environ.get(k) for k in _LAUNCHER_ENV)


def env_rank() -> int:
    """This process's rank as the launcher set it (0 when not launched); no MLX import."""
    for key in ("MLX_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        value = os.environ.get(key)
        if value and value.isdigit():
            return int(value)
    return 0


def local_ranks() -> int:
    """How many ranks of this job run on this host (from the ring hostfile; 1 when unknown)."""
    path = os.environ.get("MLX_HOSTFILE")
    rank = os.environ.get("MLX_RANK")
    if not path or rank is None:
        return int(os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE", "1") or 1)
    try:
        with open(path) as fh:
            hosts = json.loads(fh.read() or "[]")
        ips = [h[0].rsplit(":", 1)[0] if h else "" for h in hosts]
        return max(1, ips.count(ips[int(rank)]))
    except (OSError, ValueError, IndexError, TypeError):
        return 1


def blas_threads() -> int | None:
    """BLAS threads per rank so that the ranks on one host do not oversubscribe its cores."""
    n = local_ranks()
    if not launched() or n <= 1:
        return None
    return max(1, (os.cpu_count() or 1) // n)


@dataclass
class World:
    rank: int = 0
    size: int = 1
    group: Any = field(default=None, repr=False)
    wait_s: float = 0.0  # seconds spent inside collectives (waiting for the slowest rank, mostly)
    collectives: int = 0
    meeting: Any = field(default=None, repr=False)  # engine.distributed_local.LocalMeeting
    _item_s: float = 0.0  # this rank's compute time and item count (for the idle sleep)
    _items: int = 0

    @property
    def root(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    # -- collectives (run on the engine thread, inside a job) ------------------------------------
    def meet(self) -> None:
        """Wait (sleeping) for the ranks on this host before an exchange; see engine/distributed_local.py."""
        if self.meeting is None:
            return
        from engine.distributed_local import PeerGone

        try:
            self.meeting.arrive()
        except PeerGone as exc:
            raise RankFailed(f"rank {self.rank}: {exc}", 1, reported=False) from None

    def _all_gather(self, arr: Any) -> Any:
        import time

        import mlx.core as mx

        t0 = time.perf_counter()
        try:
            out = mx.distributed.all_gather(arr, group=self.group, stream=mx.cpu)
            mx.eval(out)
            self.wait_s += time.perf_counter() - t0
            self.collectives += 1
        except RuntimeError as exc:
            raise RankFailed(f"rank {self.rank}: lost the connection to the other ranks ({exc}); "
                             "a rank stopped or died", 1, reported=False) from None
        return out

    def gather_bytes(self, payload: bytes) -> list[bytes]:
        """Every rank's ``payload``, in rank order, on every rank."""
        if not self.active:
            return [payload]
        import mlx.core as mx

        self.meet()
        lengths = [int(x) for x in self._all_gather(mx.array([len(payload)], dtype=mx.int64)).tolist()]
        return self._gather_padded(payload, lengths)

    def _gather_padded(self, payload: bytes, lengths: list[int]) -> list[bytes]:
        import mlx.core as mx
        import numpy as np

        width = max(lengths)
        if width == 0:
            return [b""] * self.size
        buf = np.zeros(width, dtype=np.uint8)
        buf[:len(payload)] = np.frombuffer(payload, dtype=np.uint8)
        rows = np.array(self._all_gather(mx.array(buf))).reshape(self.size, width)
        return [rows[k, :lengths[k]].tobytes() for k in range(self.size)]

    def broadcast(self, produce: Callable[[], Any]) -> Any:
        """Rank 0 runs ``produce()`` (JSON-able); every rank gets its value or raises its error."""
        if not self.active:
            return produce()
        value: Any = None
        if self.root:
            try:
                value = {"ok": produce()}
            except LazarusError as exc:
                value = {"error": str(exc), "code": exc.exit_code}
                self.gather_bytes(json.dumps(value).encode())
                raise
        got = json.loads(self.gather_bytes(json.dumps(value).encode() if self.root else b"")[0])
        if "error" in got:
            raise RankFailed(got["error"], got["code"])
        return got["ok"]

    def map_items(self, n_items: int, compute: Callable[[int], bytes],
                  on_result: Callable[[int, bytes], None] | None = None,
                  cancel: Callable[[], bool] | None = None,
                  on_progress: Callable[[int, int], None] | None = None) -> None:
        """Compute items ``0..n_items-1``, each exactly once, on some rank.

        Rank 0 gets ``on_result(i, payload)`` once per item (its own items at once, the others' at
        each exchange; not in index order) and ``on_progress(done, n_items)``; other ranks get
        neither. The work goes in time-boxed rounds (``LAZARUS_DIST_ROUND_S``, 3 s): each rank computes
        its strided share of what is left until its next item would pass the round's end, then all
        ranks exchange results and re-split what is left, so no rank waits long in a collective (MLX's
        ring backend polls its sockets while it waits). Any rank's cancel or error stops every rank at
        that exchange (``Cancelled`` / :class:`RankFailed`), after rank 0 has stored what finished."""
        if not self.active:
            _map_alone(n_items, compute, on_result, cancel, on_progress)
            return
        import time

        round_s = _round_s()
        remaining = list(range(n_items))
        done = 0
        while remaining:
            deadline = time.monotonic() + round_s
            mine = remaining[self.rank::self.size]
            finished, status, error = self._work_round(
                mine, deadline, compute, cancel, on_result if self.root else None,
                on_progress if self.root else None, done, n_items)
            if status == OK and len(finished) == len(mine):
                self._idle_until(deadline, len(remaining[0::self.size]) - len(mine))
            heads, blobs = self._exchange(_frames(finished), status, error)
            finished_ids = _collect(heads, blobs, on_result if self.root else None)
            done += len(finished_ids)
            remaining = [i for i in remaining if i not in finished_ids]
            if self.root and on_progress is not None:
                on_progress(done, n_items)
            _raise_on_stop(heads, blobs)

    def _work_round(self, mine: list[int], deadline: float, compute: Callable[[int], bytes],
                    cancel: Callable[[], bool] | None, on_result: Callable[[int, bytes], None] | None,
                    on_progress: Callable[[int, int], None] | None, done: int,
                    n_items: int) -> tuple[list[tuple[int, bytes]], int, bytes]:
        """Compute this rank's share ``mine`` until its next item would pass ``deadline``: the items
        finished (rank 0 keeps no payloads, ``on_result`` already has them), the status and the error
        (JSON bytes) to report at the exchange. ``done``: items finished before this round."""
        import time

        finished: list[tuple[int, bytes]] = []
        last = 0.0
        for i in mine:
            start = time.monotonic()
            if finished and start + last > deadline:
                break
            if cancel is not None and cancel():
                return finished, CANCELLED, b""
            try:
                payload = compute(i)
                if on_result is not None:
                    on_result(i, payload)
            except Cancelled:
                return finished, CANCELLED, b""
            except Exception as exc:  # noqa: BLE001 - reported to every rank by the exchange
                return finished, FAILED, _error_bytes(exc)
            last = time.monotonic() - start
            self._item_s, self._items = self._item_s + last, self._items + 1
            finished.append((i, b"" if self.root else payload))
            if on_progress is not None:
                on_progress(done + len(finished), n_items)
        return finished, OK, b""

    def _idle_until(self, deadline: float, behind: int) -> None:
        """Out of work while another rank still has ``behind`` more items than this one: sleep through
        most of it rather than spin in the collective."""
        if behind <= 0 or not self._items:
            return
        import time

        guess = 0.9 * behind * self._item_s / self._items
        time.sleep(max(0.0, min(guess, deadline - time.monotonic())))

    def _exchange(self, body: bytes, status: int, error: bytes) -> tuple[list[tuple[int, ...]], list[bytes]]:
        """One round's exchange: every rank's (status, body length, error length) and body + error."""
        import mlx.core as mx

        self.meet()
        head = self._all_gather(mx.array([status, len(body), len(error)], dtype=mx.int64))
        heads = [tuple(int(v) for v in row) for row in head.reshape(self.size, 3).tolist()]
        blobs = self._gather_padded(body + error, [a + b for _, a, b in heads])
        return heads, blobs


def _map_alone(n_items: int, compute: Callable[[int], bytes],
               on_result: Callable[[int, bytes], None] | None, cancel: Callable[[], bool] | None,
               on_progress: Callable[[int, int], None] | None) -> None:
    """:meth:`World.map_items` in a single process: every item here, in index order."""
    for i in range(n_items):
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        payload = compute(i)
        if on_result is not None:
            on_result(i, payload)
        if on_progress is not None:
            on_progress(i + 1, n_items)


def _round_s() -> float:
    """Seconds per round of :meth:`World.map_items` (``LAZARUS_DIST_ROUND_S``, 3 by default)."""
    try:
        return max(0.0, float(os.environ.get("LAZARUS_DIST_ROUND_S", "3")))
    except ValueError:
        return 3.0


def _error_bytes(exc: Exception) -> bytes:
    """A failed item's error as the JSON a rank reports at the exchange."""
    code = exc.exit_code if isinstance(exc, LazarusError) else 1
    text = str(exc) if isinstance(exc, LazarusError) else f"{type(exc).__name__}: {exc}"
    return json.dumps({"error": text, "code": code}).encode()


def _collect(heads: list[tuple[int, ...]], blobs: list[bytes],
             on_result: Callable[[int, bytes], None] | None) -> set[int]:
    """The item ids finished this round on any rank; the other ranks' payloads go to ``on_result``."""
    finished_ids: set[int] = set()
    for k, (_, n_body, _) in enumerate(heads):
        for i, payload in _unframe(blobs[k][:n_body]):
            finished_ids.add(i)
            if k != 0 and on_result is not None:
                on_result(i, payload)
    return finished_ids


def _raise_on_stop(heads: list[tuple[int, ...]], blobs: list[bytes]) -> None:
    """After an exchange: the first failed rank's error (naming it), else ``Cancelled`` if any rank was."""
    failed = [k for k, (st, _, _) in enumerate(heads) if st == FAILED]
    if failed:
        k = failed[0]
        info = json.loads(blobs[k][heads[k][1]:])
        raise RankFailed(f"rank {k} failed: {info['error']}", info["code"])
    if any(st == CANCELLED for st, _, _ in heads):
        raise Cancelled("cancelled")


def _frames(items: list[tuple[int, bytes]]) -> bytes:
    parts = [struct.pack("<Q", len(items))]
    for i, payload in items:
        parts.append(struct.pack("<QQ", i, len(payload)))
        parts.append(payload)
    return b"".join(parts)


def _unframe(blob: bytes) -> list[tuple[int, bytes]]:
    if not blob:
        return []
    (n,), pos, out = struct.unpack_from("<Q", blob), 8, []
    for _ in range(n):
        i, size = struct.unpack_from("<QQ", blob, pos)
        pos += 16
        out.append((i, blob[pos:pos + size]))
        pos += size
    return out


_WORLD: World | None = None


def finish() -> None:
    """At process exit: drop this rank's meeting files; ``LAZARUS_DIST_STATS=1``: one line per rank on
    stderr (exchanges, seconds inside collectives, CPU time)."""
    if _WORLD is None or not _WORLD.active:
        return
    if _WORLD.meeting is not None:
        _WORLD.meeting.close()
    if not os.environ.get("LAZARUS_DIST_STATS"):
        return
    import resource
    import sys

    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(f"rank {_WORLD.rank}: {_WORLD.collectives} collectives, {_WORLD.wait_s:.2f} s in them; "
          f"CPU user {ru.ru_utime:.2f} s, sys {ru.ru_stime:.2f} s", file=sys.stderr, flush=True)


def world() -> World:
    """This process's place in the job (joins the group on first call when launched)."""
    global _WORLD
    if _WORLD is None:
        if not launched():
            _WORLD = World()
        else:
            import mlx.core as mx

            from engine.distributed_local import LocalMeeting

            group = mx.distributed.init()
            _WORLD = World(group.rank(), group.size(), group)
            if _WORLD.active:
                import atexit

                _WORLD.meeting = LocalMeeting.for_job(_WORLD.rank)
                atexit.register(finish)
    return _WORLD


def pack(obj: Any) -> bytes:
    """A JSON-able value as payload bytes."""
    return json.dumps(obj, separators=(",", ":")).encode()


def unpack(payload: bytes) -> Any:
    return json.loads(payload)


def shares(n: int, size: int) -> list[list[int]]:
    """``n`` indices in ``size`` contiguous, balanced shares (the first ``n % size`` one longer)."""
    base, extra = divmod(n, size)
    out, start = [], 0
    for k in range(size):
        stop = start + base + (1 if k < extra else 0)
        out.append(list(range(start, stop)))
        start = stop
    return out


__all__ = ["RankFailed", "World", "blas_threads", "env_rank", "finish", "launched", "local_ranks", "pack", "shares", "unpack",
           "world"]
