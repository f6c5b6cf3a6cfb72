"""Circuit toolkit engine: datasets, collection (values, mean, resume), geometry, directions, probes, plots.

Model-free tests use synthetic activation files; collection uses the tiny random llama."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from engine.circuit import dataset as D
from engine.circuit.activations import load_activations
from engine.circuit.collect import collect, decision_band, output_paths, select_layers
from engine.errors import Cancelled, InputError
from engine.results.circuit import CircuitDataset, CollectRequest, DatasetPrompt
from tests.numerics import assert_vectors_close


def write_acts(path: Path, layers: dict[int, np.ndarray], labels, categories=None, label_names=("neg", "pos"),
               pairs=None) -> Path:
    from safetensors.numpy import save_file

    save_file({f"hidden_states.layer_{k}": v.astype(np.float32) for k, v in layers.items()}, str(path))
    meta = {"model_id": "synthetic", "labels": list(map(int, labels)), "label_names": list(label_names),
            "categories": categories, "pairs": pairs}
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path


def planted(n=80, d=32, seed=0, shift=3.0):
    rng = np.random.default_rng(seed)
    y = np.array([0, 1] * (n // 2))
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)
    x = rng.normal(size=(n, d)) + np.outer(y * shift, direction)
    return x, y, direction


# -- datasets --------------------------------------------------------------------------------
def test_tool_calling_counts_and_seed():
    ds = D.tool_calling(per_tool=7, no_tool=13, seed=1, tools=["get_weather", "calculator"])
    c = Counter(ds.categories)
    assert c == {"get_weather": 7, "calculator": 7, "no_tool": 13}
    assert Counter(p.label for p in ds.prompts) == {1: 14, 0: 13}
    assert all((p.tool is None) == (p.label == 0) for p in ds.prompts)
    assert len({p.text for p in ds.prompts}) == 27  # distinct while the pools last
    again = D.tool_calling(per_tool=7, no_tool=13, seed=1, tools=["get_weather", "calculator"])
    other = D.tool_calling(per_tool=7, no_tool=13, seed=2, tools=["get_weather", "calculator"])
    assert [p.text for p in again.prompts] == [p.text for p in ds.prompts]
    assert [p.text for p in other.prompts] != [p.text for p in ds.prompts]
    warnings: list[str] = []
    big = D.tool_calling(per_tool=200, no_tool=0, seed=0, tools=["web_search"], warnings=warnings)
    assert len(big.prompts) == 200 and warnings and "repeat" in warnings[0]
    with pytest.raises(InputError, match="unknown tool"):
        D.tool_calling(tools=["teleport"])


def test_arithmetic_answers_and_labels():
    ds = D.arithmetic(60, seed=3)
    assert len(ds.prompts) == 60
    for p in ds.prompts:
        a, op, b, eq = p.text.split()
        assert eq == "=" and str(eval(f"{a}{op}{b}")) == p.answer
        assert p.label == int(max(abs(int(a)), abs(int(b))) >= 10)
    assert set(ds.categories) == {"add", "subtract", "multiply"}


def test_binary_contrastive_and_roundtrip(tmp_path):
    (tmp_path / "p.txt").write_text("good one \nnice\n")
    (tmp_path / "n.txt").write_text("bad one\nawful\n")
    ds = D.binary(str(tmp_path / "p.txt"), str(tmp_path / "n.txt"), "pos", "neg", contrastive=True)
    assert ds.labels == ["neg", "pos"] and [p.pair for p in ds.prompts] == [0, 1, 0, 1]
    assert "good one " in [p.text for p in ds.prompts]  # trailing space kept
    for name in ("d.json", "d.jsonl"):
        path = D.save_dataset(ds, tmp_path / name)
        assert D.load_dataset(path) == ds
    (tmp_path / "short.txt").write_text("x\n")
    with pytest.raises(InputError, match="same number of lines"):
        D.binary(str(tmp_path / "p.txt"), str(tmp_path / "short.txt"), contrastive=True)


@pytest.mark.parametrize("content,needle", [
    ("{not json", "malformed dataset"),
    ('{"name": "x"}', "no 'prompts'"),
    ('{"prompts": [{"label": 0}]}', "prompts.0.text"),
    ('{"prompts": [{"text": "a", "label": "x"}]}', "prompts.0.label"),
    ('{"labels": ["a", "b"], "prompts": [{"text": "a", "label": 5}]}', "label 5 has no name"),
    ('{"prompts": []}', "no prompts"),
    ("[1, 2]", "expected a JSON object"),
])
def test_malformed_datasets(tmp_path, content, needle):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        D.load_dataset(p)


def test_malformed_jsonl_names_the_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "a", "label": 0}\n{"text": "b", "label":\n')
    with pytest.raises(InputError, match="line 2"):
        D.load_dataset(p)


# -- layer selection -------------------------------------------------------------------------
def test_decision_band_is_depth_relative():
    assert decision_band(30) == list(range(12, 22))
    assert decision_band(18) == list(range(7, 13))
    assert decision_band(1) == [0]
    assert select_layers("all", 4) == [0, 1, 2, 3]
    assert select_layers("3,1,1", 4) == [1, 3] and select_layers("1-2", 4) == [1, 2]
    with pytest.raises(InputError, match="out of range"):
        select_layers("8,10", 4)


# -- collection ------------------------------------------------------------------------------
def _dataset(n=10) -> CircuitDataset:
    texts = ["Hello there", "What is the weather in Paris?", "One", "Two plus two", "A long prompt with many words in it",
             "Search the web", "Tell me a story", "hi", "Compute 4 times 5", "The cat sat on the mat"]
    return CircuitDataset(name="t", labels=["a", "b"],
                          prompts=[DatasetPrompt(text=texts[i % len(texts)] + ("" if i < len(texts) else f" {i}"),
                                                 label=i % 2) for i in range(n)])


def test_collect_last_matches_direct_forward(tiny_llama, tmp_path):
    from engine.representations import last_hidden

    ds = _dataset()
    D.save_dataset(ds, tmp_path / "d.json")
    r = collect(tiny_llama, CollectRequest(dataset=str(tmp_path / "d.json"), output=str(tmp_path / "acts"),
                                           batch_size=3))
    assert r.batches_total == 4 and r.batches_computed == 4 and r.batches_reused == 0
    acts = load_activations(tmp_path / "acts.safetensors")
    assert acts.layers == [0, 1, 2, 3]
    ref = last_hidden(tiny_llama, [p.text for p in ds.prompts], [0, 3])
    assert_vectors_close(acts.get(0), ref[0], depth=1)  # batches of 3 vs one batch: rounding only
    assert_vectors_close(acts.get(3), ref[1], depth=4)
    meta = acts.meta
    assert meta["labels"] == [p.label for p in ds.prompts] and meta["prompts"] == [p.text for p in ds.prompts]
    assert meta["hidden_size"] == 64 and meta["captured_layers"] == [0, 1, 2, 3]
    assert not output_paths(str(tmp_path / "acts"))[2].exists()  # shards removed after the merge


def test_collect_mean_excludes_padding(tiny_llama, tmp_path):
    import mlx.core as mx

    from engine.hooks import Batch, CaptureSpec, HookedModel

    ds = _dataset(4)
    r = collect(tiny_llama, CollectRequest(dataset="mem", output=str(tmp_path / "m"), layers="1,2",
                                           position="mean", batch_size=4), dataset=ds)
    acts = load_activations(r.activations_file)
    assert acts.layers == [1, 2]
    hm = HookedModel(tiny_llama)
    for i, p in enumerate(ds.prompts):  # each prompt alone: no padding at all
        ids = tiny_llama.tokenizer.prepare(p.text, chat=False)
        out = hm.forward(Batch.from_lists([ids]), capture=CaptureSpec(layers=[2], positions="all"), logits="none")
        want = np.array(out.captures["blocks.2.resid_post"][0].astype(mx.float32)).mean(axis=0)
        assert_vectors_close(acts.get(2)[i], want, depth=3)


def test_collect_resumes_without_recomputing(tiny_llama, tmp_path):
    ds = _dataset(10)
    full = collect(tiny_llama, CollectRequest(dataset="d", output=str(tmp_path / "full"), batch_size=2), dataset=ds)
    calls = {"n": 0}

    def cancel_after_three():
        calls["n"] += 1
        return calls["n"] > 3 * 5  # collect checks once per batch, forward once per layer (4) per batch

    req = CollectRequest(dataset="d", output=str(tmp_path / "part"), batch_size=2)
    with pytest.raises(Cancelled):
        collect(tiny_llama, req, cancel=cancel_after_three, dataset=ds)
    parts = output_paths(req.output)[2]
    done = sorted(parts.glob("batch_*.safetensors"))
    assert 1 <= len(done) < 5 and not Path(req.output + ".safetensors").exists()
    mtimes = {p: p.stat().st_mtime_ns for p in done}
    again = collect(tiny_llama, req, dataset=ds)
    assert again.batches_reused == len(done) and again.batches_computed == 5 - len(done)
    assert Path(again.activations_file).read_bytes() == Path(full.activations_file).read_bytes()
    assert all(not p.exists() or p.stat().st_mtime_ns == t for p, t in mtimes.items())


def test_collect_again_reuses_a_finished_collection(tiny_llama, tmp_path, monkeypatch):
    """Collecting the same dataset with the same settings again reuses every batch (no forward);
    other settings recompute."""
    import engine.circuit.collect as C

    ds = _dataset(6)
    req = CollectRequest(dataset="d", output=str(tmp_path / "r"), batch_size=2, generate=2)
    first = collect(tiny_llama, req, dataset=ds)
    data = Path(first.activations_file).read_bytes()
    meta = json.loads(Path(first.metadata_file).read_text())
    monkeypatch.setattr(C, "_run_batch", lambda *a, **k: pytest.fail("a finished batch was recomputed"))
    seen = []
    again = collect(tiny_llama, req, dataset=ds, on_batch=lambda d, t: seen.append((d, t)))
    assert (again.batches_computed, again.batches_reused, again.batches_total) == (0, 3, 3)
    assert seen[-1] == (3, 3) and Path(again.activations_file).read_bytes() == data
    meta2 = json.loads(Path(again.metadata_file).read_text())
    assert meta2["generations"] == meta["generations"] and len(meta2["generations"]) == 6
    assert meta2["batches_reused"] == 3 and meta2["labels"] == meta["labels"]
    monkeypatch.undo()
    other = collect(tiny_llama, req.model_copy(update={"layers": "0,1"}), dataset=ds)
    assert other.batches_computed == 3 and other.batches_reused == 0


def test_collect_discards_shards_of_another_run(tiny_llama, tmp_path):
    ds = _dataset(4)
    req = CollectRequest(dataset="d", output=str(tmp_path / "x"), batch_size=2)
    parts = output_paths(req.output)[2]
    parts.mkdir()
    (parts / "state.json").write_text(json.dumps({"fingerprint": "other"}))
    (parts / "batch_000000.safetensors").write_bytes(b"junk")
    r = collect(tiny_llama, req, dataset=ds)
    assert r.batches_computed == 2 and r.warnings and "different run" in r.warnings[0]


def test_collect_generate_stores_outputs(tiny_llama, tmp_path):
    ds = _dataset(3)
    r = collect(tiny_llama, CollectRequest(dataset="d", output=str(tmp_path / "g"), layers="0", generate=3,
                                           batch_size=2), dataset=ds)
    meta = json.loads(Path(r.metadata_file).read_text())
    assert len(meta["generations"]) == 3 and all(isinstance(t, str) and t for t in meta["generations"])


def test_streaming_writer_matches_safetensors(tmp_path):
    from safetensors import safe_open

    from engine.circuit.collect import write_safetensors_streaming

    rng = np.random.default_rng(0)
    a = rng.normal(size=(7, 5)).astype(np.float32)
    b = rng.normal(size=(7, 5)).astype(np.float32)
    data = {"hidden_states.layer_0": a, "hidden_states.layer_10": b}
    write_safetensors_streaming(tmp_path / "s.safetensors", list(data), lambda n: [7, 5],
                                lambda n: (data[n][:3], data[n][3:]), {"k": "v"})
    with safe_open(str(tmp_path / "s.safetensors"), framework="numpy") as f:
        assert f.metadata() == {"k": "v"}
        for k, v in data.items():
            np.testing.assert_array_equal(f.get_tensor(k), v)


# -- activations / geometry ------------------------------------------------------------------
def test_missing_layer_and_one_label(tmp_path):
    from engine.circuit.geometry import analyze

    x, y, _ = planted()
    p = write_acts(tmp_path / "a.safetensors", {2: x, 5: x}, y)
    acts = load_activations(p)
    with pytest.raises(InputError, match=r"layer 3 is not in .* \(collected layers: 2,5\)"):
        analyze(acts, layer=3)
    one = load_activations(write_acts(tmp_path / "b.safetensors", {2: x}, np.ones(len(y), int)))
    with pytest.raises(InputError, match="needs two labels.*'pos'"):
        analyze(one)


def test_geometry_pca_and_probes(tmp_path):
    from engine.circuit.geometry import analyze, pca_curve

    rng = np.random.default_rng(1)
    low = rng.normal(size=(60, 3)) @ rng.normal(size=(3, 40))  # rank 3
    _, cum, _d90, d95 = pca_curve(low)
    assert d95 <= 3 and abs(cum[2] - 1.0) < 1e-9
    x, y, _ = planted(n=80, d=32, shift=4.0)
    noise = np.random.default_rng(5).normal(size=x.shape)
    cats = [("c0" if v else "c1") if i % 3 else "c2" for i, v in enumerate(y)]
    acts = load_activations(write_acts(tmp_path / "g.safetensors", {0: noise, 1: x}, y, cats))
    r = analyze(acts, kmeans=True)
    sig, rnd = r.layers[1].binary_probe, r.layers[0].binary_probe
    assert sig.heldout_accuracy >= 0.95 and sig.cv_accuracy >= 0.95
    assert rnd.cv_accuracy < 0.75 and rnd.baseline == 0.5
    assert r.best_layer == 1 and r.layers[1].category_probe.classes == 3
    assert r.layers[1].kmeans_silhouette is not None


def test_pairs_stay_together_in_cv():
    from engine.circuit.geometry import folds, pair_groups, split

    y = np.array([1, 0] * 10)
    groups = pair_groups([i // 2 for i in range(20)])
    for tr, te in folds(y, 0, groups):
        assert not set(groups[tr]) & set(groups[te])
    tr, te = split(y, 0, groups=groups)
    assert not set(groups[tr]) & set(groups[te]) and len(set(y[te])) == 2


# -- directions ------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["diff_means", "lda", "probe_weights", "pca"])
def test_directions_recover_planted(tmp_path, method):
    from engine.circuit.directions import extract
    from engine.direction_files import load_direction
    from engine.steering import SteeringDirection

    x, y, true = planted(n=120, d=24, shift=6.0)
    acts = load_activations(write_acts(tmp_path / "d.safetensors", {4: x}, y))
    r = extract(acts, 4, method, output_dir=str(tmp_path / "dirs"))
    d = r.directions[0]
    assert d.positive == "pos" and d.negative == "neg" and d.heldout_accuracy >= 0.9
    f = load_direction(d.file)
    assert f.layer == 4 and f.extra["label_positive"] == "pos"
    assert float(f.unit @ true) > 0.8  # sign fixed: positives project higher
    s = SteeringDirection.load(d.file)
    assert s.layer == 4 and s.positive_label == "pos"


def test_directions_per_category(tmp_path):
    from engine.circuit.directions import extract

    rng = np.random.default_rng(2)
    centers = rng.normal(size=(3, 16)) * 4
    cats = [f"t{i % 3}" for i in range(60)]
    x = np.stack([centers[i % 3] for i in range(60)]) + rng.normal(size=(60, 16))
    acts = load_activations(write_acts(tmp_path / "c.safetensors", {0: x}, [int(c != "t0") for c in cats], cats))
    r = extract(acts, 0, "diff_means", per_category=True)
    assert [d.name for d in r.directions] == ["t0_vs_rest", "t1_vs_rest", "t2_vs_rest"]
    assert all(d.heldout_accuracy >= 0.9 for d in r.directions) and len(r.cosine) == 3


# -- probes ----------------------------------------------------------------------------------
def test_builtin_probes_and_init(tmp_path):
    from engine.circuit.probes import CATEGORIES, builtin_datasets, init_datasets, load_battery

    sets = builtin_datasets()
    assert {s.probe_category for s in sets} == set(CATEGORIES)
    for s in sets:
        assert 20 <= len(s.prompts) <= 40 and len({p.text for p in s.prompts}) == len(s.prompts)
    files = init_datasets(str(tmp_path / "probes"))
    assert len(files) == len(sets)
    loaded = load_battery(str(tmp_path / "probes"), "decision")
    assert {s.name for s in loaded} == {s.name for s in sets if s.probe_category == "decision"}
    with pytest.raises(InputError, match="unknown probe category"):
        load_battery(None, "phonetic")


def test_probe_battery_one_forward_per_batch(tiny_llama, monkeypatch):
    from engine.circuit import probes as P
    from engine.hooks import HookedModel

    calls = []
    real = HookedModel.forward

    def counting(self, batch, **kw):
        calls.append((batch.ids.shape[0], tuple(kw["capture"].layers)))
        return real(self, batch, **kw)

    monkeypatch.setattr(HookedModel, "forward", counting)
    r = P.run_battery(tiny_llama, category="decision", threshold=0.75)
    n = sum(p.n_prompts for p in r.probes)
    assert r.forwards == len(calls) == -(-n // P.BATCH)
    assert all(layers == (0, 1, 2, 3) for _, layers in calls)
    for p in r.probes:
        assert [s.layer for s in p.layers] == [0, 1, 2, 3] and p.baseline == 0.5
        first = next((s.layer for s in p.layers if s.cv_accuracy >= 0.75), None)
        assert p.emergence_layer == first


# -- visualize -------------------------------------------------------------------------------
def test_visualize_pngs_and_terminal(tmp_path):
    from PIL import Image

    from engine.circuit.visualize import visualize

    x, y, _ = planted(n=40, d=16)
    acts = load_activations(write_acts(tmp_path / "v.safetensors", {0: x, 1: x * 2}, y))
    r = visualize(acts, str(tmp_path / "plots"), pca=True, umap=False, probes=True)
    assert [Path(f).name for f in r.files] == [f"pca_variance_L{r.layer}.png", "probe_accuracy.png"]
    for f in r.files:
        with Image.open(f) as im:
            im.verify()
        with Image.open(f) as im:
            assert im.format == "PNG" and im.size[0] > 500
    assert "PCA cumulative variance" in r.terminal_charts[0] and "Probe accuracy" in r.terminal_charts[1]
