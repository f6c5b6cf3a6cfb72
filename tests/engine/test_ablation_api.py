"""The seed's ablation Python API examples, adapted to SmolLM2, run as written."""

from __future__ import annotations


def test_seed_api_examples(capsys):
    from engine import AblationConfig, AblationStudy, ComponentType

    study = AblationStudy.from_pretrained("smollm2-135m")
    try:
        # Single-layer sweep
        def criterion(output: str) -> bool:
            return "Paris" in output

        result = study.run_layer_sweep(
            prompt="The capital of France is",
            criterion=criterion,
            component=ComponentType.MLP,
            layers=range(26, 30),
            config=AblationConfig(max_new_tokens=3, chat=False),
        )
        study.print_sweep_summary(result)
        printed = capsys.readouterr().out
        assert "L26 mlp" in printed and "L29 mlp" in printed
        assert [p.label for p in result.points] == ["L26 mlp", "L27 mlp", "L28 mlp", "L29 mlp"]
        for p in result.points:
            assert p.outputs[0].passed == criterion(p.outputs[0].text)

        # Multi-layer ablation
        config = AblationConfig(max_new_tokens=5, chat=False)
        original = study.ablate_and_generate("45 * 45 = ", layers=[], config=config)
        ablated = study.ablate_and_generate("45 * 45 = ", layers=[22, 23], config=config)
        print(f"Original: {original}")
        print(f"Ablated L22+L23: {ablated}")
        assert isinstance(original, str) and original
        # the no-ablation output is the baseline that a sweep reports
        sweep = study.run_layer_sweep(prompt="45 * 45 = ", criterion="2025", layers=[22], config=config)
        assert sweep.baseline[0].text == original
    finally:
        study.close()
