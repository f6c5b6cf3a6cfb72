"""Activation collection: a dataset through the model in batches, streamed to ``.safetensors``.

Each batch is one hooked forward capturing every selected layer (``resid_post``, the layer
output) at the last prompt position or averaged over the prompt's real tokens (padding
excluded). Finished batches are written as shard files (``<out>.safetensors.parts/
batch_NNNNNN.safetensors``, temp file + rename) next to a ``state.json`` fingerprint of the
run. A killed run leaves its finished shards; rerunning the same command reuses them (no
recomputation) and computes only the rest. At the end the shards are merged, layer by layer,
into one ``.safetensors`` file written with a streaming writer, so memory holds one batch
(collection) or one shard's slice (merge) at a time, whatever the dataset size.

Layer selections: ``all``; a list (``8,10``, ``20-23``); ``decision``, the depth-relative band
of layers ``ceil(0.4 * (L-1)) .. floor(0.75 * (L-1))`` (SmolLM2, 30 layers: 12-21; Gemma 3
270M, 18 layers: 7-12), never a fixed range.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from engine.circuit.dataset import load_dataset
from engine.distributed import World
from engine.errors import AnalysisError, InputError
from engine.fileio import write_atomic
from engine.hooks import Batch, CaptureSpec, HookedModel, KVState, SiteKind
from engine.models import LoadedModel
from engine.results.circuit import CircuitDataset, CollectRequest, CollectResult

FORMAT = "lazarus-circuit-activations"
DECISION_BAND = (0.4, 0.75)


def decision_band(n_layers: int) -> list[int]:
    """Layers ``ceil(0.4 (L-1)) .. floor(0.75 (L-1))`` (at least one layer)."""
    last = n_layers - 1
    lo = math.ceil(DECISION_BAND[0] * last)
    hi = max(lo, math.floor(DECISION_BAND[1] * last))
    return list(range(lo, min(hi, last) + 1))


def select_layers(spec: str, n_layers: int) -> list[int]:
    """``all`` | ``decision`` | a layer list, checked against the model."""
    spec = spec.strip()
    if spec == "all":
        return list(range(n_layers))
    if spec == "decision":
        return decision_band(n_layers)
    from engine.layer_lists import parse_layers

    return parse_layers(spec, n_layers)


def output_paths(output: str) -> tuple[Path, Path, Path]:
    """(activations ``.safetensors``, metadata ``.json``, shard directory)."""
    out = Path(output)
    if out.suffix != ".safetensors":
        out = out.with_name(out.name + ".safetensors")
    return out, out.with_suffix(".json"), out.with_name(out.name + ".parts")


def _fingerprint(lm: LoadedModel, ds: CircuitDataset, layers: list[int], req: CollectRequest) -> str:
    spec = {"model": lm.info.model_id, "dtype": lm.info.dtype, "prompts": [p.text for p in ds.prompts],
            "layers": layers, "position": req.position, "batch_size": req.batch_size,
            "generate": req.generate, "chat": req.chat}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _atomic_write_bytes(path: Path, write: Callable[[object], None]) -> None:
    write_atomic(path, write, binary=True)


def _run_batch(hm: HookedModel, lm: LoadedModel, rows: list[list[int]], layers: list[int], position: str,
               generate: int, cancel: Callable[[], bool] | None) -> tuple[dict[str, np.ndarray], list[str]]:
    batch = Batch.from_lists(rows, lm.tokenizer.batch_pad_id)
    cap = CaptureSpec(kinds=(SiteKind.resid_post,), layers=layers, positions="last" if position == "last" else "all")
    kv = KVState(hm.n_layers, batch.pad) if generate else None
    out = hm.forward(batch, capture=cap, logits="last" if generate else "none", kv=kv,
                     stop_layer=None if generate else max(layers) + 1, cancel=cancel)
    tensors: dict[str, np.ndarray] = {}
    if position == "mean":
        S = batch.ids.shape[1]
        mask = (mx.arange(S)[None, :] >= mx.array(batch.pad)[:, None]).astype(mx.float32)[:, :, None]
        denom = mx.array(batch.lengths, dtype=mx.float32)[:, None]
    for layer in layers:
        h = out.captures[f"blocks.{layer}.resid_post"].astype(mx.float32)
        v = h[:, 0, :] if position == "last" else (h * mask).sum(axis=1) / denom
        tensors[f"layer_{layer}"] = np.array(v)
    texts: list[str] = []
    if generate:
        from engine.generate import generate_ids

        tok = lm.tokenizer
        outs = generate_ids(hm, rows, generate, stop_ids=tok.eos_ids, cancel=cancel, kv=kv,
                            first_logits=out.logits[:, -1, :])
        for o in outs:
            ids = o.ids[:-1] if o.stopped == "eos" else o.ids
            texts.append(tok.decode(ids))
    return tensors, texts


def write_safetensors_streaming(path: Path, names: list[str], shape_of: Callable[[str], list[int]],
                                chunks: Callable[[str], object], metadata: dict[str, str]) -> int:
    """Write a safetensors file tensor by tensor: ``chunks(name)`` yields float32 arrays whose rows
    concatenate to the tensor. Nothing larger than one chunk is held in memory. Returns the size."""
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name in names:
        shape = shape_of(name)
        size = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)

    def write(fh) -> None:
        fh.write(struct.pack("<Q", len(hb)))
        fh.write(hb)
        for name in names:
            written = 0
            for arr in chunks(name):
                b = np.ascontiguousarray(arr, dtype="<f4").tobytes()
                written += len(b)
                fh.write(b)
            want = header[name]["data_offsets"]  # type: ignore[index]
            if written != want[1] - want[0]:
                raise RuntimeError(f"{name}: wrote {written} bytes, expected {want[1] - want[0]}")

    _atomic_write_bytes(path, write)
    return 8 + len(hb) + offset


def _shard_ok(path: Path, layers: list[int], hidden: int, rows: int, generate: bool) -> bool:
    """A finished shard holds every layer as F32 [rows, hidden] and is as long as its header says."""
    try:
        with path.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > 1 << 24:
                return False
            header = json.loads(fh.read(n))
        size = path.stat().st_size
        end = 0
        for layer in layers:
            t = header[f"layer_{layer}"]
            if t["dtype"] != "F32" or t["shape"] != [rows, hidden]:
                return False
            end = max(end, t["data_offsets"][1])
        if generate and len(json.loads(header["__metadata__"]["generations"])) != rows:
            return False
        return size == 8 + n + end
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return False


class _Lock:
    """An exclusive ``flock`` on ``<parts>/lock`` for the whole run: a second run into the same
    output stops at once; the kernel drops the lock when the holder exits, however it ends."""

    def __init__(self, parts: Path, out: Path) -> None:
        import fcntl

        self.fh = (parts / "lock").open("a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.seek(0)
            pid = self.fh.read().strip()
            self.fh.close()
            raise InputError(f"another collect run (pid {pid or '?'}) is writing {out}; wait for it to finish "
                             f"or stop it (lock: {parts / 'lock'})") from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(str(os.getpid()))
        self.fh.flush()

    def release(self) -> None:
        self.fh.close()


def _prepare_parts(parts: Path, out: Path, fp: str, layers: list[int], hidden: int, batch_rows: list[int],
                   generate: bool, warnings: list[str]) -> tuple[_Lock, list[int]]:
    """Lock the shard directory, drop what a different run or a killed write left, check every finished
    shard; return the lock and the batches still to compute."""
    if not out.parent.exists():
        raise InputError(f"output directory does not exist: {out.parent}")
    try:
        parts.mkdir(exist_ok=True)
        lock = _Lock(parts, out)
    except OSError as exc:
        raise InputError(f"cannot write the shard directory {parts}: {exc.strerror or exc}") from None
    try:
        state_file = parts / "state.json"
        try:
            old = json.loads(state_file.read_text()).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            old = None
        leftovers = [p for p in parts.iterdir() if p.name != "lock"]
        if old != fp and leftovers:
            if old is not None or any(p.name.startswith("batch_") for p in leftovers):
                warnings.append(f"discarded unfinished shards in {parts}: they came from a different run")
            for p in leftovers:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        for stale in parts.glob(".*.tmp"):  # a shard that was being written when the run was killed
            stale.unlink(missing_ok=True)
        if not state_file.exists():
            _atomic_write_bytes(state_file, lambda fh: fh.write(json.dumps({"fingerprint": fp}).encode()))
        pending, damaged = [], []
        for k, rows in enumerate(batch_rows):
            shard = parts / f"batch_{k:06d}.safetensors"
            if not shard.exists():
                pending.append(k)
            elif not _shard_ok(shard, layers, hidden, rows, generate):
                shard.unlink()
                damaged.append(shard.name)
                pending.append(k)
        if damaged:
            warnings.append(f"recomputed {len(damaged)} damaged shard(s) in {parts}: " + ", ".join(damaged[:5])
                            + (" ..." if len(damaged) > 5 else ""))
        return lock, pending
    except OSError as exc:
        lock.release()
        raise InputError(f"cannot use the shard directory {parts}: {exc.strerror or exc}") from None
    except BaseException:
        lock.release()
        raise


def collect(lm: LoadedModel, req: CollectRequest, cancel: Callable[[], bool] | None = None,
            on_batch: Callable[[int, int], None] | None = None,
            dataset: CircuitDataset | None = None, world: World | None = None) -> CollectResult | None:
    """Run ``req.dataset`` through ``lm``; write ``req.output`` (.safetensors) and its ``.json`` metadata.

    Under a distributed launcher (``world`` with several ranks) the batches are shared among the
    ranks and rank 0 writes every shard and the outputs; the other ranks return ``None``. Shards are
    per batch (``batch_size``), not per rank, so a run resumes with any number of ranks."""
    w = world or World()
    t0 = time.perf_counter()
    ds = dataset if dataset is not None else load_dataset(req.dataset)
    n_layers = lm.num_layers
    layers = select_layers(req.layers, n_layers)
    out, meta_path, parts = output_paths(req.output)
    hm = HookedModel(lm)
    tok = lm.tokenizer
    if req.chat and not tok.chat_template:
        raise InputError("this model has no chat template; drop --chat")
    rows = []
    for i, p in enumerate(ds.prompts):
        ids = tok.prepare(p.text, chat=req.chat)
        if not ids:
            raise InputError(f"prompt {i + 1} encodes to no tokens")
        rows.append(ids)
    fp = _fingerprint(lm, ds, layers, req)
    hidden = lm.info.hidden_size
    warnings: list[str] = []
    bs = req.batch_size
    n_batches = (len(rows) + bs - 1) // bs
    done = _finished(out, meta_path, parts, fp, len(rows))
    if done is not None:  # the same collection finished earlier: every batch is reused, no forward
        if not w.root:
            return None
        if on_batch is not None:
            on_batch(n_batches, n_batches)
        return _reuse(lm, req, ds, rows, layers, out, meta_path, done, n_batches, t0)
    shard = [parts / f"batch_{k:06d}.safetensors" for k in range(n_batches)]
    held: list[_Lock] = []

    def prepare() -> dict[str, object]:
        lock, pending = _prepare_parts(parts, out, fp, layers, hidden,
                                       [len(rows[k * bs:(k + 1) * bs]) for k in range(n_batches)],
                                       bool(req.generate), warnings)
        held.append(lock)
        return {"pending": pending}

    try:
        pending: list[int] = w.broadcast(prepare)["pending"]
        reused = n_batches - len(pending)
        if on_batch is not None and reused and w.root:
            on_batch(reused, n_batches)

        def compute(i: int) -> bytes:
            k = pending[i]
            tensors, texts = _run_batch(hm, lm, rows[k * bs:(k + 1) * bs], layers, req.position, req.generate,
                                        cancel)
            return save_file_bytes(tensors, {"generations": json.dumps(texts)})

        def store(i: int, payload: bytes) -> None:
            try:
                _atomic_write_bytes(shard[pending[i]], lambda fh: fh.write(payload))
            except OSError as exc:
                raise AnalysisError(f"cannot write {shard[pending[i]]}: {exc.strerror or exc}") from None

        w.map_items(len(pending), compute, store, cancel,
                 None if on_batch is None else lambda d, _t: on_batch(reused + d, n_batches))
        if not w.root:
            return None
        computed = len(pending)
        result = _merge(lm, req, ds, rows, layers, out, meta_path, parts, shard, fp, n_batches, computed, reused,
                        warnings, t0)
    finally:
        for lock in held:
            lock.release()
    return result


def _finished(out: Path, meta_path: Path, parts: Path, fp: str, n_prompts: int) -> dict[str, Any] | None:
    """The metadata of a finished collection with this fingerprint at ``out`` (no run under way), else None."""
    if parts.exists() or not out.exists() or not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    same = meta.get("dataset", {}).get("sha256") == fp and meta.get("num_prompts") == n_prompts
    return meta if same else None


def _reuse(lm: LoadedModel, req: CollectRequest, ds: CircuitDataset, rows: list[list[int]], layers: list[int],
           out: Path, meta_path: Path, old: dict[str, Any], n_batches: int, t0: float) -> CollectResult:
    """Keep the activation file; rewrite the metadata from the current dataset file (labels, categories)."""
    seconds = time.perf_counter() - t0
    meta = {**old, "dataset": {**old["dataset"], "path": str(req.dataset), "name": ds.name, "kind": ds.kind},
            "label_names": ds.labels, "labels": [p.label for p in ds.prompts], "categories": ds.categories,
            "tools": [p.tool for p in ds.prompts], "answers": [p.answer for p in ds.prompts],
            "pairs": [p.pair for p in ds.prompts], "batches_computed": 0, "batches_reused": n_batches,
            "seconds": seconds}
    _atomic_write_bytes(meta_path, lambda fh: fh.write((json.dumps(meta, indent=2) + "\n").encode()))
    return CollectResult(model_id=lm.info.model_id, request=req, activations_file=str(out),
                         metadata_file=str(meta_path), num_prompts=len(rows), hidden_size=lm.info.hidden_size,
                         num_layers=lm.num_layers, captured_layers=layers, layer_selection=req.layers,
                         batches_total=n_batches, batches_computed=0, batches_reused=n_batches, seconds=seconds,
                         prompts_per_second=len(rows) / max(seconds, 1e-9), file_bytes=out.stat().st_size,
                         warnings=[])


def _merge(lm: LoadedModel, req: CollectRequest, ds: CircuitDataset, rows: list[list[int]], layers: list[int],
           out: Path, meta_path: Path, parts: Path, shard: list[Path], fp: str, n_batches: int, computed: int,
           reused: int, warnings: list[str], t0: float) -> CollectResult:
    from safetensors import safe_open

    n_layers = lm.num_layers
    bs = req.batch_size
    # merge: one layer at a time, one shard slice at a time
    hidden = lm.info.hidden_size
    names = [f"hidden_states.layer_{layer}" for layer in layers]

    def chunks(name: str):
        key = "layer_" + name.rsplit("_", 1)[1]
        for s in shard:
            with safe_open(str(s), framework="numpy") as f:
                yield f.get_tensor(key)

    st_meta = {"format": FORMAT, "model_id": lm.info.model_id, "layers": ",".join(map(str, layers)),
               "position": req.position, "num_prompts": str(len(rows)), "hidden_size": str(hidden)}
    size = write_safetensors_streaming(out, names, lambda _n: [len(rows), hidden], chunks, st_meta)
    generations: list[str] = []
    if req.generate:
        for s in shard:
            with safe_open(str(s), framework="numpy") as f:
                generations.extend(json.loads(f.metadata()["generations"]))
    seconds = time.perf_counter() - t0
    meta = {
        "format": FORMAT, "version": 1, "model_id": lm.info.model_id, "model_type": lm.info.model_type,
        "dtype": lm.info.dtype, "num_layers": n_layers, "hidden_size": hidden, "captured_layers": layers,
        "layer_selection": req.layers, "position": req.position, "chat": req.chat,
        "dataset": {"path": str(req.dataset), "name": ds.name, "kind": ds.kind, "sha256": fp},
        "label_names": ds.labels, "num_prompts": len(rows),
        "prompts": [p.text for p in ds.prompts], "labels": [p.label for p in ds.prompts],
        "categories": ds.categories, "tools": [p.tool for p in ds.prompts],
        "answers": [p.answer for p in ds.prompts], "pairs": [p.pair for p in ds.prompts],
        "num_tokens": [len(r) for r in rows],
        "generate_tokens": req.generate, "generations": generations if req.generate else None,
        "batch_size": bs, "batches_total": n_batches, "batches_computed": computed, "batches_reused": reused,
        "seconds": seconds,
    }
    _atomic_write_bytes(meta_path, lambda fh: fh.write((json.dumps(meta, indent=2) + "\n").encode()))
    shutil.rmtree(parts, ignore_errors=True)  # the lock file too; the caller releases its lock
    return CollectResult(model_id=lm.info.model_id, request=req, activations_file=str(out),
                         metadata_file=str(meta_path), num_prompts=len(rows), hidden_size=hidden,
                         num_layers=n_layers, captured_layers=layers, layer_selection=req.layers,
                         batches_total=n_batches, batches_computed=computed, batches_reused=reused,
                         seconds=seconds, prompts_per_second=len(rows) / max(seconds, 1e-9), file_bytes=size,
                         warnings=warnings)


def save_file_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    from safetensors.numpy import save

    return save({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, metadata=metadata)
