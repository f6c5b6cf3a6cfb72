"""Batch work spread over MLX distributed ranks (``mx.distributed``, launched with ``mlx.launch``).

A process started by a launcher (``mlx.launch``: ``MLX_RANK``; ``mpirun``: ``OMPI_COMM_WORLD_SIZE`` /
``PMI_SIZE``) joins the global group on first use of :func:`world`; any other process is rank 0 of 1
and never imports ``mx.distributed`` (a plain run behaves exactly as before).

Work is split into *items* (a batch of prompts, one rank's share of an ablation) and run in
*rounds*: in round ``j`` rank ``k`` computes item ``j * size + k`` (a strided share, so each item is
computed by exactly one rank), then every rank joins one ``all_gather`` of a small header (status,
payload length) and, when anything was produced, one ``all_gather`` of the payloads (bytes). Rank 0
receives every payload in item order, whatever the number of ranks, and is the only rank that writes
files or prints. Because every rank takes part in every round's header exchange, a cancel (Ctrl-C)
or an error on any rank stops all ranks at the same round, with one message naming the rank; a
rank that dies closes its sockets and the others stop with "lost the connection" instead of hanging.
"""

from __future__ import annotations

import json
import os
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
        hosts = json.loads(open(path).read() or "[]")
        ip = lambda entry: entry[0].rsplit(":", 1)[0] if entry else ""  # noqa: E731
        mine = ip(hosts[int(rank)])
        return max(1, sum(1 for h in hosts if ip(h) == mine))
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

    @property
    def root(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    # -- collectives (run on the engine thread, inside a job) ------------------------------------
    def _all_gather(self, arr: Any) -> Any:
        import mlx.core as mx

        try:
            out = mx.distributed.all_gather(arr, group=self.group, stream=mx.cpu)
            mx.eval(out)
        except RuntimeError as exc:
            raise RankFailed(f"rank {self.rank}: lost the connection to the other ranks ({exc}); "
                             "a rank stopped or died", 1, reported=False) from None
        return out

    def gather_bytes(self, payload: bytes) -> list[bytes]:
        """Every rank's ``payload``, in rank order, on every rank."""
        if not self.active:
            return [payload]
        import mlx.core as mx

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

    def rounds(self, n_items: int, compute: Callable[[int], bytes],
               on_result: Callable[[int, bytes], None] | None = None,
               cancel: Callable[[], bool] | None = None,
               on_progress: Callable[[int, int], None] | None = None) -> None:
        """Compute items ``0..n_items-1`` across the ranks (item ``i`` on rank ``i % size``).

        Rank 0 gets ``on_result(i, payload)`` for every item in increasing ``i`` and
        ``on_progress(done, n_items)`` after each round; other ranks get neither. Any rank's cancel or
        error stops every rank after the current round (``Cancelled`` / :class:`RankFailed`)."""
        size = self.size
        n_rounds = (n_items + size - 1) // size
        for j in range(n_rounds):
            i = j * size + self.rank
            status, payload, local_exc = OK, b"", None
            if cancel is not None and cancel():
                status = CANCELLED
            elif i < n_items:
                try:
                    payload = compute(i)
                except Cancelled:
                    status = CANCELLED
                except Exception as exc:  # noqa: BLE001 - reported to every rank, re-raised here
                    status, local_exc = FAILED, exc
                    code = exc.exit_code if isinstance(exc, LazarusError) else 1
                    text = str(exc) if isinstance(exc, LazarusError) else f"{type(exc).__name__}: {exc}"
                    payload = json.dumps({"error": text, "code": code}).encode()
            if not self.active:
                if status == CANCELLED:
                    raise Cancelled("cancelled")
                if local_exc is not None:
                    raise local_exc
                results = [payload]
            else:
                import mlx.core as mx

                head = self._all_gather(mx.array([status, len(payload)], dtype=mx.int64))
                heads = [tuple(int(v) for v in row) for row in head.reshape(size, 2).tolist()]
                failed = [k for k, (st, _) in enumerate(heads) if st == FAILED]
                if failed or any(st == CANCELLED for st, _ in heads):
                    results = self._gather_padded(payload if status == FAILED else b"",
                                                  [n if st == FAILED else 0 for st, n in heads])
                    if failed:
                        k = failed[0]
                        info = json.loads(results[k])
                        raise RankFailed(f"rank {k} failed: {info['error']}", info["code"])
                    raise Cancelled("cancelled")
                results = self._gather_padded(payload, [n for _, n in heads])
            if self.root and on_result is not None:
                for k in range(size):
                    if j * size + k < n_items:
                        on_result(j * size + k, results[k])
            if self.root and on_progress is not None:
                on_progress(min((j + 1) * size, n_items), n_items)


_WORLD: World | None = None


def world() -> World:
    """This process's place in the job (joins the group on first call when launched)."""
    global _WORLD
    if _WORLD is None:
        if not launched():
            _WORLD = World()
        else:
            import mlx.core as mx

            group = mx.distributed.init()
            _WORLD = World(group.rank(), group.size(), group)
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


__all__ = ["RankFailed", "World", "blas_threads", "env_rank", "launched", "local_ranks", "pack", "shares", "unpack", "world"]
