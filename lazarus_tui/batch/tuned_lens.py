"""`lazarus --batch tuned-lens train|eval`: train a tuned lens for a model; measure it against the logit lens."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.table import Table
from rich.text import Text

from engine.errors import Cancelled, InputError
from lazarus_tui.batch.common import (
    ArgumentParser,
    JobRunner,
    add_model_args,
    add_output_args,
    emit,
    err,
    out,
)

USAGE = "usage: lazarus --batch tuned-lens {train,eval} [options]   (lazarus --batch tuned-lens train -h)"


def train_parser() -> ArgumentParser:
    from engine.results.tuned_lens import TrainSettings

    d = TrainSettings()
    p = ArgumentParser(prog="lazarus --batch tuned-lens train",
                       description="train a tuned lens (one affine translator per layer) with MLX autodiff")
    add_model_args(p)
    p.add_argument("--corpus", default=None, help="text file, or directory of .txt/.md/.rst files "
                   "(default: the Python standard library's docstrings, train split)")
    p.add_argument("--tokens", type=int, default=d.tokens, help=f"positions to train on (default {d.tokens})")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (overrides --tokens)")
    p.add_argument("--batch-tokens", type=int, default=d.batch_tokens, help="positions per step")
    p.add_argument("--seq-len", type=int, default=d.seq_len, help="tokens per corpus sequence")
    p.add_argument("--lr", type=float, default=d.lr, help=f"Adam rate of the biases, in units of each dimension's "
                   f"RMS (default {d.lr}; warm-up, then cosine decay)")
    p.add_argument("--matrix-lr", type=float, default=d.matrix_lr, help=f"Adam rate of the matrices, as the "
                   f"spectral size of a step (default {d.matrix_lr})")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--resume", action="store_true", help="continue the interrupted run's checkpoint (OUT.ckpt.safetensors)")
    p.add_argument("--checkpoint-every", type=int, default=20, help="steps between checkpoints")
    p.add_argument("-o", "--output", default=None,
                   help="lens file to write (default: $LAZARUS_CACHE/lenses/<model>.safetensors, what --lens tuned reads)")
    p.add_argument("--json", action="store_true", help="print the training report as JSON on stdout")
    return p


def eval_parser() -> ArgumentParser:
    p = ArgumentParser(prog="lazarus --batch tuned-lens eval",
                       description="per layer: KL to the final distribution (bits) and top-1 agreement, logit vs tuned lens")
    add_model_args(p)
    p.add_argument("--lens", required=True, help="lens file (or tuned: the model's default file)")
    p.add_argument("--text", default=None, help="text to evaluate on, or @FILE (default: the held-out corpus split)")
    p.add_argument("--tokens", type=int, default=512, help="positions of the held-out corpus to evaluate (default 512)")
    add_output_args(p)
    return p


def _train(argv: list[str]) -> int:
    from engine.results.tuned_lens import TrainSettings

    args = train_parser().parse_args(argv)
    for name in ("tokens", "batch_tokens", "checkpoint_every"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    if args.steps is not None and args.steps < 1:
        raise InputError("--steps must be at least 1")
    if args.seq_len < 2:
        raise InputError("--seq-len must be at least 2")
    if args.lr <= 0 or args.matrix_lr <= 0:
        raise InputError("--lr and --matrix-lr must be positive")
    if args.output and not Path(args.output).parent.exists():
        raise InputError(f"output directory does not exist: {Path(args.output).parent}")
    if args.corpus and not Path(args.corpus).expanduser().exists():
        raise InputError(f"corpus not found: {args.corpus}")
    settings = TrainSettings(corpus=args.corpus, tokens=args.tokens, steps=args.steps, batch_tokens=args.batch_tokens,
                             seq_len=args.seq_len, lr=args.lr, matrix_lr=args.matrix_lr, seed=args.seed)
    runner = JobRunner(args.model, args.dtype)
    where: dict[str, Path] = {}

    def job(ctx):
        from engine.tuned_lens import default_lens_path
        from engine.tuned_lens_train import train_lens

        lm = ctx.model()
        target = Path(args.output) if args.output else default_lens_path(lm.info.model_id)
        where["target"] = target
        if not args.output:
            target.parent.mkdir(parents=True, exist_ok=True)
        every = max(1, settings.n_steps // 10)

        def on_step(step: int, steps: int, kl: list[float]) -> None:
            mean = sum(kl) / len(kl)
            ctx.progress("train", step, steps, f"tuned-lens train: step {step}/{steps} · KL {mean:.2f} bits")
            if step % every == 0 or step == steps:
                cells = " ".join(f"{i}:{x:.2f}" for i, x in enumerate(kl))
                err.print(f"step {step}/{steps}  mean KL(final‖tuned) {mean:.3f} bits  per layer {cells}",
                          markup=False)

        return lm.info, train_lens(lm, settings, target, resume=args.resume, cancel=ctx.cancelled, on_step=on_step,
                                   checkpoint_every=args.checkpoint_every)

    try:
        _info, report = runner.run(job, "tuned-lens train")
    except Cancelled:
        from engine.tuned_lens_train import checkpoint_path

        ckpt = checkpoint_path(where["target"]) if "target" in where else None
        if ckpt is not None and ckpt.is_file():
            err.print(f"checkpoint saved ({ckpt}): rerun with --resume to continue", markup=False)
        raise
    if args.json:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    else:
        b = report.binding
        out.print(f"tuned lens for {b.model_id} ({b.num_layers} layers, hidden {b.hidden_size}, weights {b.weights_hash})")
        out.print(f"  written: {report.path}")
        out.print(f"  trained on {report.tokens} positions of {b.corpus} in {report.steps} steps, "
                  f"{report.seconds:.0f} s")
        if report.kl_bits:
            out.print(f"  KL(final‖tuned), last steps' batches: mean {sum(report.kl_bits) / len(report.kl_bits):.3f} bits")
    return 0


def eval_request(args):
    from engine.results.tuned_lens import LensEvalRequest

    text = args.text
    if text is not None and text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise InputError(f"text file not found: {path}")
        text = path.read_text(encoding="utf-8", errors="replace")
    if args.tokens < 1:
        raise InputError("--tokens must be at least 1")
    return LensEvalRequest(model=args.model, lens=args.lens, text=text, tokens=args.tokens)


def chart(r, width: int = 100, height: int = 20) -> str:
    """KL per layer, logit vs tuned (the paper's figure 1), as plotext text."""
    import plotext as plt

    plt.clear_figure()
    plt.plotsize(width, height)
    xs = [x.layer for x in r.layers]
    plt.plot(xs, [x.logit_kl for x in r.layers], label="logit lens", marker="braille")
    plt.plot(xs, [x.tuned_kl for x in r.layers], label="tuned lens", marker="dot")  # told apart when piped too
    plt.title("KL(final ‖ lens), bits, by layer")
    plt.xlabel("layer")
    plt.theme("clear")
    text = plt.build()
    plt.clear_figure()
    return text


def render(r) -> None:
    b = r.lens
    out.print(f"Model: {r.model_id}   lens: {b.path} (trained for {b.model_id}, weights {b.weights_hash}, "
              f"{b.tokens} positions of {b.corpus})")
    out.print(f"Evaluated on {r.tokens} positions of {r.text}\n")
    t = Table(title="KL(final ‖ lens) in bits and top-1 agreement with the final prediction", title_justify="left")
    for col in ("layer", "logit KL", "tuned KL", "logit top-1", "tuned top-1"):
        t.add_column(col, justify="right")
    for x in r.layers:
        better = x.tuned_kl < x.logit_kl
        tk = f"[green]{x.tuned_kl:.3f}[/green]" if better else f"{x.tuned_kl:.3f}"
        t.add_row(str(x.layer), f"{x.logit_kl:.3f}", tk, f"{x.logit_top1:.3f}", f"{x.tuned_top1:.3f}")
    t.add_row("mean", f"{r.mean_logit_kl:.3f}", f"{r.mean_tuned_kl:.3f}", "", "")
    out.print(t)
    out.print(Text.from_ansi(chart(r)))  # colours on a terminal, plain text when piped
    ratio = r.mean_tuned_kl / r.mean_logit_kl if r.mean_logit_kl > 0 else float("nan")
    out.print(f"mean KL: logit {r.mean_logit_kl:.3f} bits, tuned {r.mean_tuned_kl:.3f} bits (ratio {ratio:.3f})")


def _eval(argv: list[str]) -> int:
    args = eval_parser().parse_args(argv)
    req = eval_request(args)
    from engine.distributions import prepare

    prepare()
    runner = JobRunner(args.model, args.dtype)

    def job(ctx):
        from engine.tuned_lens_eval import evaluate

        return evaluate(ctx.model(), req, ctx.cancelled, ctx.counter("eval", "tuned-lens eval: sequences"))

    emit(runner.run(job, "tuned-lens eval"), args, render)
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    sub, rest = argv[0], argv[1:]
    if sub == "train":
        return _train(rest)
    if sub == "eval":
        return _eval(rest)
    raise InputError(f"unknown tuned-lens command {sub!r} (train or eval)")
