"""The analyses the Workbench screen offers: request model, batch command, form hints, and the
batch twin of a request.

Form fields are generated from each request model's fields (``form_fields``); text is turned
into field values by ``parse_field`` with the batch commands' own parsers (``a|b|c`` and
``@file`` prompts, ``5,8`` / ``20-23`` layers), so the TUI and ``lazarus --batch`` read input
the same way.
"""

from __future__ import annotations

import shlex
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from engine.errors import InputError
from engine.results.compare import CompareRequest
from engine.results.diff import ActivationDiffRequest, WeightDiffRequest
from engine.results.directions import DirectionsRequest
from engine.results.layers import FormatSensitivityRequest, LayerRequest
from engine.results.neurons import NeuronsRequest
from engine.results.patch import PatchRequest
from engine.results.probe import ProbeRequest


@dataclass(frozen=True)
class Analysis:
    name: str  # the request's ``kind`` and the batch command
    title: str
    about: str
    request: type[BaseModel]
    flags: dict[str, str]  # request field -> batch flag ("" = positional)
    example: dict[str, str] = field(default_factory=dict)  # initial form text
    hints: dict[str, str] = field(default_factory=dict)
    join: dict[str, str] = field(default_factory=dict)  # list field -> separator (default "|")


PROMPTS_HINT = "a|b|c or @file"
LAYERS_HINT = "5,8 or 20-23 (blank: default)"
MODEL_HINT = "blank: the current model"

ANALYSES: list[Analysis] = [
    Analysis("layer", "layer", "per layer, the cosine matrix of the prompts' last-position outputs",
             LayerRequest, {"model": "-m", "prompts": "-p", "labels": "-l", "layers": "--layers",
                            "attention": "-a", "chat": "--chat"},
             example={"prompts": "The cat sat|The dog ran|2 + 2 =|3 + 5 =", "labels": "text|text|math|math"}),
    Analysis("format-sensitivity", "format-sensitivity", "each prompt with and without a trailing space, per layer",
             FormatSensitivityRequest, {"model": "-m", "prompts": "-p", "layers": "--layers", "chat": "--chat"},
             example={"prompts": "156 + 287 =|50 + 25 ="}),
    Analysis("probe", "probe", "logistic probe per layer (stratified CV): where are two classes separable?",
             ProbeRequest, {"model": "-m", "class_a": "--class-a", "class_b": "--class-b", "label_a": "--label-a",
                            "label_b": "--label-b", "layers": "--layers", "layer": "-l", "method": "--method",
                            "test": "-t", "chat": "--chat", "seed": "--seed"},
             example={"class_a": "Is it raining?|Where are you?|What is this?|Who came home?|Why is it cold?",
                      "class_b": "It is raining.|You are here.|This is a cup.|Tom came home.|It is cold.",
                      "label_a": "question", "label_b": "statement"}),
    Analysis("neurons", "neurons", "neuron values at the prompts' last position (residual dims or MLP units)",
             NeuronsRequest, {"model": "-m", "prompts": "-p", "layers": "--layers", "neurons": "-n",
                              "neuron_names": "--neuron-names", "mlp": "--mlp", "from_direction": "--from-direction",
                              "top_k": "--top-k", "auto_discover": "--auto-discover", "labels": "--labels",
                              "steer": "--steer", "strength": "--strength", "chat": "--chat"},
             example={"prompts": "What is this?|This is it.|Where are you?|I am here.", "layers": "12",
                      "auto_discover": "1", "labels": "q|s|q|s", "top_k": "5"}),
    Analysis("directions", "directions", "cosines between saved direction files (.npz)",
             DirectionsRequest, {"files": "", "threshold": "--threshold"},
             hints={"files": "a.npz|b.npz (two or more)"}),
    Analysis("compare", "compare", "the logit lens on two models, side by side per layer",
             CompareRequest, {"model1": "-m1", "model2": "-m2", "dtype1": "--dtype", "dtype2": "--dtype2",
                              "prompt": "-p", "top_k": "--top-k", "track": "--track", "chat": "--chat"},
             example={"prompt": "The capital of France is", "dtype2": "q8", "track": " Paris"},
             hints={"track": "tokens, comma-separated: ' Paris, London'"}, join={"track": ","}),
    Analysis("weight-diff", "weight-diff", "relative weight difference per layer and matrix (same architecture)",
             WeightDiffRequest, {"base": "-b", "finetuned": "-f", "base_dtype": "--dtype",
                                 "finetuned_dtype": "--dtype2", "flag_above": "--flag"},
             example={"finetuned_dtype": "q4"}),
    Analysis("activation-diff", "activation-diff", "cosine between two models' last-position outputs per layer",
             ActivationDiffRequest, {"base": "-b", "finetuned": "-f", "base_dtype": "--dtype",
                                     "finetuned_dtype": "--dtype2", "prompts": "-p", "layers": "--layers",
                                     "chat": "--chat"},
             example={"finetuned_dtype": "q4", "prompts": "The capital of France is|2 + 2 ="}),
    Analysis("patch", "patch", "activation patching: the source's layer output written into the target's run",
             PatchRequest, {"model": "-m", "source": "--source", "target": "--target", "layers": "--layers",
                            "position": "--position", "blend": "--blend", "top_k": "--top-k", "chat": "--chat"},
             example={"source": "The capital of France is", "target": "The capital of Germany is",
                      "layers": "0,10,20,29"},
             hints={"position": "last, all or a token index"}),
]
BY_NAME = {a.name: a for a in ANALYSES}


# -- fields ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FormField:
    name: str
    kind: str  # "text" | "int" | "float" | "bool" | "choice" | "ints" | "strs"
    optional: bool
    default: Any
    choices: tuple[str, ...] = ()


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(the type without ``| None``, whether None is allowed)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else tp), len(args) < len(typing.get_args(tp))
    return tp, False


def form_fields(analysis: Analysis) -> list[FormField]:
    """The request model's fields (but ``kind``) in declaration order, each with a form kind."""
    out = []
    for name, info in analysis.request.model_fields.items():
        if name == "kind" or name not in analysis.flags:
            continue
        tp, optional = _unwrap(info.annotation)
        origin = typing.get_origin(tp)
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        if origin is Literal:
            ff = FormField(name, "choice", optional, default, tuple(str(a) for a in typing.get_args(tp)))
        elif origin is list:
            inner = typing.get_args(tp)[0]
            ff = FormField(name, "ints" if inner is int else "strs", optional, default)
        elif tp is bool:
            ff = FormField(name, "bool", optional, default)
        elif tp is int:
            ff = FormField(name, "int", optional, default)
        elif tp is float:
            ff = FormField(name, "float", optional, default)
        else:
            ff = FormField(name, "text", optional, default)
        out.append(ff)
    return out


def initial_text(analysis: Analysis, ff: FormField) -> str:
    """What the form shows at first: the example, else the field's default as text."""
    if ff.name in analysis.example:
        return analysis.example[ff.name]
    if ff.default is None or ff.default == [] or ff.kind == "bool":
        return ""
    if ff.kind in ("ints", "strs"):
        return analysis.join.get(ff.name, "|" if ff.kind == "strs" else ",").join(str(x) for x in ff.default)
    return str(ff.default)


def hint(analysis: Analysis, ff: FormField) -> str:
    if ff.name in analysis.hints:
        return analysis.hints[ff.name]
    if ff.name in ("model", "model1", "model2", "base", "finetuned"):
        return MODEL_HINT
    if ff.name.endswith("dtype") or ff.name.startswith("dtype"):
        return "auto, float32, float16, bfloat16, q4, q8"
    if ff.kind == "ints":
        return LAYERS_HINT if "layer" in ff.name else "808,1190"
    if ff.kind == "strs":
        return "x|y|x (one per prompt)" if "label" in ff.name or "names" in ff.name else PROMPTS_HINT
    return ""


def parse_field(analysis: Analysis, ff: FormField, raw: Any) -> Any:
    """Form value (text, or bool for checkboxes) -> the request field's value; InputError if bad."""
    from lazarus_tui.inputs import parse_layers, split_labels, split_prompts

    if ff.kind == "bool":
        return bool(raw)
    text = str(raw)
    if text.strip() == "":
        if ff.optional:
            return None
        if ff.default is not None:
            return ff.default
        if ff.kind == "text":
            return ""
        raise InputError(f"{ff.name.replace('_', ' ')}: required")
    try:
        if ff.kind == "int":
            return int(text)
        if ff.kind == "float":
            return float(text)
    except ValueError as exc:
        raise InputError(f"{ff.name.replace('_', ' ')}: not a number: {text!r}") from exc
    if ff.kind == "ints":
        return parse_layers(text)
    if ff.kind == "strs":
        sep = analysis.join.get(ff.name)
        if sep:
            return text.split(sep)
        if "label" in ff.name:
            return split_labels(text)
        if ff.name in ("files", "neuron_names"):
            return [x.strip() for x in text.split("|") if x.strip()]
        return split_prompts(text)
    return text


def build_request(analysis: Analysis, values: dict[str, Any]) -> BaseModel:
    """The request from form values (``{field: text or bool}``); raises InputError / ValidationError."""
    data = {}
    for ff in form_fields(analysis):
        if ff.name in values:
            v = parse_field(analysis, ff, values[ff.name])
            if v is not None:
                data[ff.name] = v
    return analysis.request(**data)


# -- the batch twin ------------------------------------------------------------------------------
def twin_command(analysis: Analysis, req: BaseModel, current_model: str | None = None) -> str:
    """``lazarus --batch NAME ...`` running ``req`` (blank models become the current model)."""
    parts = ["lazarus", "--batch", analysis.name]
    positional: list[str] = []
    fields = analysis.request.model_fields
    for name, flag in analysis.flags.items():
        value = getattr(req, name)
        default = None if fields[name].is_required() else fields[name].get_default(call_default_factory=True)
        if value is None and name in ("model", "model1", "base") and current_model:
            value = current_model
        if value is None or (value == default and name not in ("prompts", "files")):
            continue
        if isinstance(value, bool):
            if value:
                parts.append(flag)
            continue
        if isinstance(value, list):
            if not flag:
                positional += [str(x) for x in value]
                continue
            sep = analysis.join.get(name, "|" if value and isinstance(value[0], str) else ",")
            text = sep.join(str(x) for x in value)
        else:
            text = f"{value:g}" if isinstance(value, float) else str(value)
        if text.startswith("-"):
            parts.append(f"{flag}={text}")  # a negative value must not read as a flag
        else:
            parts += [flag, text]
    return " ".join(shlex.quote(x) for x in parts + positional)
