"""The `t` lens toggle on the lens and tracking screens (real SmolLM2, a lens file bound to it): the
tuned numbers differ from the logit lens's, the side panel shows the file's model binding, and the
batch twin (`lazarus --batch analyze ... --lens tuned:FILE`, run as a user would) prints the same numbers."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest

from lazarus_tui.app import LazarusApp
from lazarus_tui.screens.lens import LensScreen
from lazarus_tui.screens.tracking import TrackingScreen
from lazarus_tui.widgets.lens_choice import LensPanel
from tests.batch.helpers import lazarus

pytestmark = [pytest.mark.real_model, pytest.mark.timeout(300)]
PROMPT = "The capital of France is"


async def settle(app, pilot) -> None:
    await pilot.pause(0.05)
    await app.workers.wait_for_complete()
    await pilot.pause(0.1)


@pytest.fixture(scope="module")
def smol_lens_file(real_engine, tmp_path_factory):
    """Small random translators (not trained: the numbers only have to differ), bound to SmolLM2."""
    from engine.tuned_lens import save_lens, weights_hash

    lm_info, digest = real_engine.session.run(lambda ctx: (ctx.model().info, weights_hash(ctx.model())))
    rng = np.random.default_rng(0)
    L, d = lm_info.num_layers, lm_info.hidden_size
    weight = (rng.standard_normal((L, d, d)) * 0.02).astype(np.float32)
    weight[-1] = 0.0
    bias = np.zeros((L, d), np.float32)
    path = tmp_path_factory.mktemp("lens") / "smol.safetensors"
    save_lens(path, weight, bias, {"model_id": lm_info.model_id, "weights_hash": digest, "hidden_size": d, "num_layers": L,
                                       "dtype": lm_info.dtype, "corpus": "test: random translators", "tokens": 0, "steps": 0})
    return path


def _numbers(result) -> list[tuple[int, list[int], list[float]]]:
    return [(lp.layer_idx, [t.token_id for t in lp.predictions], [t.probability for t in lp.predictions])
            for lp in result.layer_predictions]


async def test_lens_toggle_matches_its_batch_twin(real_engine, smol_lens_file) -> None:
    from lazarus_tui.batch.analyze import twin_command

    app = LazarusApp(real_engine, lens_file=str(smol_lens_file))
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, LensScreen)
        assert "logit" in str(screen.query_one(LensPanel).render())
        await pilot.click("#prompt")
        await pilot.press(*PROMPT, "enter")
        await settle(app, pilot)
        logit = screen.result
        assert logit.lens is None and logit.request.lens == "logit"
        screen.query_one("#layers").focus()
        await pilot.press("t")
        await settle(app, pilot)
        tuned = screen.result
        assert tuned.request.lens == f"tuned:{smol_lens_file}" and tuned.lens is not None
        panel = str(screen.query_one(LensPanel).render())
        assert "tuned" in panel and "trained for smollm2-135m" in panel and tuned.lens.weights_hash in panel
        assert _numbers(tuned)[0] != _numbers(logit)[0]  # the translators change what layer 0 reads
        assert _numbers(tuned)[-1][1] == _numbers(logit)[-1][1]  # the last translator is the identity
        # the batch twin, run as a user would, prints the same numbers
        argv = shlex.split(twin_command(tuned.request, tuned.model_id))
        assert argv[:3] == ["lazarus", "--batch", "analyze"] and "--lens" in argv
        proc = lazarus(*argv[2:], "--json")
        assert proc.returncode == 0, proc.stderr
        twin = json.loads(proc.stdout)
        assert twin["lens"]["weights_hash"] == tuned.lens.weights_hash
        for (layer, ids, probs), lp in zip(_numbers(tuned), twin["layer_predictions"], strict=True):
            assert lp["layer_idx"] == layer and [t["token_id"] for t in lp["predictions"]] == ids
            assert [t["probability"] for t in lp["predictions"]] == pytest.approx(probs, rel=1e-4, abs=1e-7)
        # t again: back to the logit lens, same numbers as before
        await pilot.press("t")
        await settle(app, pilot)
        assert screen.result.lens is None and _numbers(screen.result) == _numbers(logit)


async def test_tracking_toggle_reads_the_tuned_lens(real_engine, smol_lens_file) -> None:
    app = LazarusApp(real_engine, lens_file=str(smol_lens_file))
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        await pilot.press("f2")
        await pilot.pause(0.1)
        screen = app.screen
        assert isinstance(screen, TrackingScreen)
        screen.query_one("#rank-table").focus()
        await pilot.press("t")
        await pilot.click("#add-token")
        await pilot.press("space", *"Paris", "enter")
        await pilot.click("#prompt")
        await pilot.press(*PROMPT, "enter")
        await settle(app, pilot)
        r = screen.result
        assert r.request.lens == f"tuned:{smol_lens_file}" and r.lens is not None
        assert "trained for smollm2-135m" in str(screen.query_one(LensPanel).render())
        same = await real_engine.analyze(r.request)
        assert same.token_evolutions[0].layer_ranks == r.token_evolutions[0].layer_ranks
        logit = await real_engine.analyze(r.request.model_copy(update={"lens": "logit"}))
        assert logit.token_evolutions[0].layer_ranks != r.token_evolutions[0].layer_ranks
        assert logit.token_evolutions[0].layer_ranks[29] == r.token_evolutions[0].layer_ranks[29] == 1
