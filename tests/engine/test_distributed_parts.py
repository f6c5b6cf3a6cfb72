"""The pieces of distributed batch work that run in one process: splitting and merging studies,
damaged and locked collect shards, the launcher environment. (2-rank runs: tests/batch/test_distributed.py.)"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest

from engine.ablation import run_ablation
from engine.ablation_split import merge, part_request, plan_parts
from engine.circuit.collect import collect, output_paths
from engine.distributed import World, _frames, _unframe, blas_threads, launched, local_ranks
from engine.errors import Cancelled, InputError
from engine.results.ablation import AblationRequest, PromptCase
from engine.results.circuit import CircuitDataset, CollectRequest, DatasetPrompt


def _split_run(lm, req, size):
    kind, parts = plan_parts(lm, req, size)
    results = [run_ablation(lm, part_request(lm, req, kind, p)) for p in parts]
    return kind, parts, merge(req, kind, parts, results, 0.0)


def _drop_timing(r):
    d = r.model_dump(mode="json")
    d.pop("elapsed_s")
    return d


def test_ablation_split_by_prompts_equals_one_run(tiny_llama):
    cases = [PromptCase(prompt=p, expected="x") for p in ("a b", "c d", "e f g", "h", "i j", "k l m n")]
    req = AblationRequest(prompts=cases, layers=[0, 2, 3], chat=False, max_tokens=3)
    kind, parts, merged = _split_run(tiny_llama, req, 2)
    assert kind == "prompts" and sorted(i for p in parts for i in p) == list(range(len(cases)))
    assert len(parts) > 2  # several length groups, each split
    assert _drop_timing(merged) == _drop_timing(run_ablation(tiny_llama, req))


def test_ablation_split_by_points_equals_one_run(tiny_llama):
    req = AblationRequest(prompt="a b c", criterion="d", mode="grid", chat=False, max_tokens=3)
    kind, parts, merged = _split_run(tiny_llama, req, 3)
    assert kind == "points" and [len(p) for p in parts] == [4, 4, 4]  # 4 layers x 3 components
    assert _drop_timing(merged) == _drop_timing(run_ablation(tiny_llama, req))


def test_one_process_world_maps_items_in_order_and_cancels():
    w = World()
    seen, progress = [], []
    w.map_items(4, lambda i: bytes([i]), lambda i, b: seen.append((i, b)), None,
                lambda d, n: progress.append((d, n)))
    assert seen == [(i, bytes([i])) for i in range(4)] and progress == [(i, 4) for i in range(1, 5)]
    calls = iter([False, False, True])
    with pytest.raises(Cancelled):
        w.map_items(4, lambda i: b"", None, lambda: next(calls))
    assert w.broadcast(lambda: {"a": 1}) == {"a": 1}
    assert w.gather_bytes(b"xy") == [b"xy"]


def test_frames_round_trip():
    items = [(3, b""), (0, b"abc"), (7, bytes(range(256)))]
    assert _unframe(_frames(items)) == items and _unframe(b"") == []


def test_launcher_environment(monkeypatch, tmp_path):
    for k in ("MLX_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MLX_HOSTFILE"):
        monkeypatch.delenv(k, raising=False)
    assert not launched() and blas_threads() is None
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(json.dumps([["127.0.0.1:5000"], ["127.0.0.1:5001"], ["10.0.0.2:5002"]]))
    monkeypatch.setenv("MLX_RANK", "1")
    monkeypatch.setenv("MLX_HOSTFILE", str(hostfile))
    assert launched() and local_ranks() == 2
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert blas_threads() == 4


def _dataset(n: int) -> CircuitDataset:
    return CircuitDataset(name="t", labels=["a", "b"],
                          prompts=[DatasetPrompt(text=f"prompt number {i} " + "x " * (i % 3), label=i % 2)
                                   for i in range(n)])


def test_collect_recomputes_a_damaged_shard(tiny_llama, tmp_path):
    ds = _dataset(6)
    full = collect(tiny_llama, CollectRequest(dataset="d", output=str(tmp_path / "full"), batch_size=2), dataset=ds)
    req = CollectRequest(dataset="d", output=str(tmp_path / "part"), batch_size=2)
    calls = {"n": 0}

    def cancel_in_third_batch():
        calls["n"] += 1
        return calls["n"] > 2 * 5  # one check per batch, one per layer (4) in the forward

    with pytest.raises(Cancelled):
        collect(tiny_llama, req, cancel=cancel_in_third_batch, dataset=ds)
    parts = output_paths(req.output)[2]
    shard = parts / "batch_000001.safetensors"
    good = shard.read_bytes()
    shard.write_bytes(good[: len(good) // 2])  # truncated, as a full disk or a crash in a copy would leave it
    again = collect(tiny_llama, req, dataset=ds)
    assert again.batches_reused == 1 and again.batches_computed == 2
    assert any("recomputed 1 damaged shard" in w and "batch_000001" in w for w in again.warnings)
    assert Path(again.activations_file).read_bytes() == Path(full.activations_file).read_bytes()


def test_collect_refuses_an_output_another_run_holds(tiny_llama, tmp_path):
    req = CollectRequest(dataset="d", output=str(tmp_path / "held"), batch_size=2)
    parts = output_paths(req.output)[2]
    parts.mkdir()
    with open(parts / "lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fh.write("4242")
        fh.flush()
        with pytest.raises(InputError, match="another collect run .*4242.* is writing"):
            collect(tiny_llama, req, dataset=_dataset(2))
    r = collect(tiny_llama, req, dataset=_dataset(2))  # the lock is free again
    assert r.batches_computed == 1 and not parts.exists()


def test_steer_settings_split_equals_one_run(tiny_llama):
    from engine.results.steering import SteerRequest
    from engine.steering import run_steer
    from engine.steering_split import merge

    req = SteerRequest(prompts=["a b c", "hello there", "x"], coefficients=[-8.0, 0.0, 8.0], layers=[1, 2],
                       neuron=3, max_tokens=4, chat=False)
    whole = run_steer(tiny_llama, req)
    parts = [[0, 1], [2, 3, 4, 5, 6], list(range(7, 18))]  # cuts through prompt/layer groups
    merged = merge(tiny_llama, req, None, [run_steer(tiny_llama, req, only=p) for p in parts],
                   whole.generation_seconds)
    assert merged.model_dump() == whole.model_dump()
    assert any(o.diverged_at is not None for o in merged.outputs[:6])  # twins generated in another part



def test_sampled_steer_split_equals_one_run(tiny_llama):
    """-t > 0: each part draws the whole batch's random numbers and keeps its rows, so the parts sample
    what one run samples (one run's own sampling is unchanged: mx.random.categorical)."""
    from engine.generate import generate_ids
    from engine.hooks import HookedModel
    from engine.results.steering import SteerRequest
    from engine.steering import run_steer
    from engine.steering_split import merge, splits

    req = SteerRequest(prompts=["a b c", "hello there", "x"], coefficients=[-8.0, 0.0, 8.0], layers=[1, 2],
                       neuron=3, max_tokens=5, chat=False, temperature=1.5, seed=7)
    assert splits(req)
    whole = run_steer(tiny_llama, req)
    parts = [[0, 1], [2, 3, 4, 5, 6], list(range(7, 18))]
    merged = merge(tiny_llama, req, None, [run_steer(tiny_llama, req, only=p) for p in parts],
                   whole.generation_seconds)
    assert merged.model_dump() == whole.model_dump()
    greedy = run_steer(tiny_llama, req.model_copy(update={"temperature": 0.0}))
    assert [o.token_ids for o in whole.outputs] != [o.token_ids for o in greedy.outputs]  # it did sample
    hm = HookedModel(tiny_llama)
    rows = [tiny_llama.tokenizer.prepare(p, chat=False) for p in req.prompts]
    one = generate_ids(hm, rows, 5, temperature=1.5, seed=7)
    assert [o.ids for o in generate_ids(hm, rows[1:], 5, temperature=1.5, seed=7, sample_rows=(1, 3))] == \
        [o.ids for o in one[1:]]

class _ThreadWorld(World):
    """A rank of an in-process 'job' of threads: the collectives meet at a barrier (no MLX group)."""

    def __init__(self, rank, size, shared):
        super().__init__(rank, size)
        self.shared = shared

    def _all_gather(self, arr):
        import numpy as np

        slots, barrier = self.shared
        slots[self.rank] = np.array(arr)
        barrier.wait()
        out = np.concatenate([slots[k] for k in range(self.size)])
        barrier.wait()
        return out


def _run_threads(size, body):
    import threading

    shared = ({}, threading.Barrier(size, timeout=30))
    results, errors = [None] * size, [None] * size

    def run(k):
        try:
            results[k] = body(_ThreadWorld(k, size, shared))
        except Exception as exc:  # noqa: BLE001
            errors[k] = exc

    threads = [threading.Thread(target=run, args=(k,)) for k in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, errors


def test_map_items_computes_each_item_once_and_rank0_gets_all(monkeypatch):
    import random
    import time

    monkeypatch.setenv("LAZARUS_DIST_ROUND_S", "0.05")
    computed: list[tuple[int, int]] = []

    def body(w):
        got = {}

        def compute(i):
            time.sleep(random.uniform(0, 0.03))
            computed.append((w.rank, i))
            return bytes([i]) * (i + 1)

        w.map_items(11, compute, lambda i, p: got.__setitem__(i, p))
        return got

    results, errors = _run_threads(3, body)
    assert errors == [None] * 3
    assert sorted(i for _, i in computed) == list(range(11))  # each item exactly once
    assert len({r for r, _ in computed}) == 3  # every rank took part
    assert results[0] == {i: bytes([i]) * (i + 1) for i in range(11)} and results[1] == results[2] == {}


def test_map_items_names_the_failing_rank_on_every_rank():
    stored = []

    def body(w):
        def compute(i):
            if i == 3:
                raise InputError("prompt 4 is too long")
            return b"ok"

        w.map_items(6, compute, lambda i, p: stored.append(i))

    _, errors = _run_threads(2, body)
    from engine.distributed import RankFailed

    assert all(isinstance(e, RankFailed) and e.exit_code == 2 for e in errors)
    assert str(errors[0]) == "rank 1 failed: prompt 4 is too long"
    assert 3 not in stored and {0, 1, 2} <= set(stored)  # what finished before the failure is kept


def test_map_items_cancel_on_one_rank_stops_all():
    def body(w):
        w.map_items(8, lambda i: b"x", None, (lambda: True) if w.rank == 1 else None)

    _, errors = _run_threads(2, body)
    assert all(isinstance(e, Cancelled) for e in errors)
