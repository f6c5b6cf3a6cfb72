"""Labelled prompt datasets: builders, the file schema, validation, summaries.

A dataset file is JSON (one object, ``CircuitDataset``) or JSONL (one prompt object per
line; an optional first line holding the header fields without ``prompts``). See
docs/circuit.md for the schema. Every load is validated; a bad file is one ``InputError``.
"""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from pathlib import Path

from pydantic import ValidationError

from engine.errors import InputError
from engine.fileio import output_name, read_text, write_text
from engine.results.circuit import CircuitDataset, DatasetPrompt, DatasetSummary, LabelCount

# -- tool-calling ----------------------------------------------------------------------------
CITIES = ["Paris", "Tokyo", "London", "Berlin", "Chicago", "Sydney", "Toronto", "Madrid", "Cairo", "Seoul",
          "Boston", "Lima", "Oslo", "Denver", "Mumbai", "Rome"]
TOPICS = ["the latest electric cars", "today's football results", "new research on sleep", "the election results",
          "recent space launches", "the newest smartphone reviews", "current mortgage rates",
          "this week's box office numbers", "the latest AI regulations", "flight delays at JFK",
          "the new climate report", "recent earthquake news"]
NUMBERS = [(37, 48), (125, 16), (982, 47), (3.5, 12), (144, 12), (1234, 5678), (87, 93), (19, 23), (256, 64),
           (73, 29), (615, 41), (48, 0.15)]
PEOPLE = ["my manager", "Alice", "the team", "my landlord", "Dr. Patel", "my sister", "the client", "Bob"]
EMAIL_SUBJECTS = ["the meeting tomorrow", "the invoice", "my vacation days", "the project deadline",
                  "the broken heater", "dinner on Friday"]
REMINDERS = ["call the dentist", "take my medicine", "submit the report", "water the plants", "pay rent",
             "pick up the kids", "join the standup call", "renew my passport"]
TIMES = ["at 9am", "tomorrow at noon", "in two hours", "on Monday morning", "at 6pm tonight", "next Friday"]
TICKERS = ["Apple", "Tesla", "Microsoft", "Nvidia", "Amazon", "Google", "Netflix", "Intel", "IBM", "Shopify"]

TOOL_TEMPLATES: dict[str, list[tuple[str, list]]] = {
    "get_weather": [
        ("What's the weather like in {} right now?", CITIES),
        ("Will it rain in {} tomorrow?", CITIES),
        ("What is the current temperature in {}?", CITIES),
        ("Give me the weather forecast for {} this weekend.", CITIES),
    ],
    "web_search": [
        ("Search the web for {}.", TOPICS),
        ("Look up {} online.", TOPICS),
        ("Find me the most recent news about {}.", TOPICS),
    ],
    "calculator": [
        ("What is {0} multiplied by {1}?", NUMBERS),
        ("Calculate {0} divided by {1}.", NUMBERS),
        ("Compute {0} plus {1} for me.", NUMBERS),
        ("What is {0} to the power of {1}?", NUMBERS),
    ],
    "send_email": [
        ("Send an email to {0} about {1}.", list(itertools.product(PEOPLE, EMAIL_SUBJECTS))),
        ("Email {0} to say I will be late for {1}.", list(itertools.product(PEOPLE, EMAIL_SUBJECTS))),
    ],
    "set_reminder": [
        ("Remind me to {0} {1}.", list(itertools.product(REMINDERS, TIMES))),
        ("Set a reminder {1} to {0}.", list(itertools.product(REMINDERS, TIMES))),
    ],
    "get_stock_price": [
        ("What is {}'s stock price right now?", TICKERS),
        ("How much is {} stock trading at today?", TICKERS),
        ("Get me the latest share price of {}.", TICKERS),
    ],
}

CONCEPTS = ["photosynthesis", "gravity", "democracy", "a metaphor", "inflation", "evolution", "a haiku",
            "the water cycle", "friendship", "recursion", "a black hole", "irony", "compound interest",
            "the Renaissance", "a sonnet", "entropy", "an ecosystem", "a prime number", "empathy", "a volcano"]
SUBJECTS = ["the ocean", "a lonely robot", "autumn leaves", "a lost cat", "the moon", "an old lighthouse",
            "a rainy afternoon", "a dragon who cannot fly", "childhood", "a quiet library"]
ADVICE = ["be more productive", "sleep better", "learn a new language", "make friends in a new city",
          "stay motivated", "write clearer essays", "handle stress", "start running", "cook simple meals",
          "prepare for a job interview"]

NO_TOOL_TEMPLATES: list[tuple[str, list]] = [
    ("Explain {} in simple terms.", CONCEPTS),
    ("What is the meaning of {}?", CONCEPTS),
    ("Write a short poem about {}.", SUBJECTS),
    ("Tell me a story about {}.", SUBJECTS),
    ("Give me some tips on how to {}.", ADVICE),
    ("How can I {}?", ADVICE),
    ("Describe {} to a child.", CONCEPTS),
]


def _expand(templates: list[tuple[str, list]]) -> list[str]:
    out = []
    for tmpl, values in templates:
        for v in values:
            out.append(tmpl.format(*v) if isinstance(v, tuple) else tmpl.format(v))
    return list(dict.fromkeys(out))


def _take(pool: list[str], n: int, rng: random.Random, what: str, warnings: list[str]) -> list[str]:
    """``n`` prompts from ``pool``: distinct while the pool lasts, then repeats (said in ``warnings``)."""
    pool = list(pool)
    rng.shuffle(pool)
    if n <= len(pool):
        return pool[:n]
    warnings.append(f"{what}: {n} requested but only {len(pool)} distinct prompts; {n - len(pool)} repeat")
    return [pool[i % len(pool)] for i in range(n)]


def tool_calling(per_tool: int = 25, no_tool: int = 100, seed: int = 42, tools: list[str] | None = None,
                 warnings: list[str] | None = None) -> CircuitDataset:
    """``per_tool`` prompts for each tool (label 1, category = the tool) and ``no_tool`` prompts that
    need no tool (label 0, category ``no_tool``); exactly the counts requested, shuffled by ``seed``."""
    if per_tool < 0 or no_tool < 0:
        raise InputError("--per-tool and --no-tool must be >= 0")
    names = tools or list(TOOL_TEMPLATES)
    unknown = [t for t in names if t not in TOOL_TEMPLATES]
    if unknown:
        raise InputError(f"unknown tool {unknown[0]!r} (tools: {', '.join(TOOL_TEMPLATES)})")
    rng = random.Random(seed)
    warnings = warnings if warnings is not None else []
    prompts: list[DatasetPrompt] = []
    for tool in names:
        for text in _take(_expand(TOOL_TEMPLATES[tool]), per_tool, rng, tool, warnings):
            prompts.append(DatasetPrompt(text=text, label=1, category=tool, tool=tool))
    for text in _take(_expand(NO_TOOL_TEMPLATES), no_tool, rng, "no_tool", warnings):
        prompts.append(DatasetPrompt(text=text, label=0, category="no_tool"))
    if not prompts:
        raise InputError("the dataset would be empty: ask for --per-tool or --no-tool > 0")
    rng.shuffle(prompts)
    return CircuitDataset(name="tool_calling", kind="tool_calling", labels=["no_tool", "tool"], seed=seed,
                          description=f"{per_tool} prompts per tool ({', '.join(names)}) vs {no_tool} without",
                          prompts=prompts)


def arithmetic(count: int = 100, seed: int = 42, ops: str = "+-*") -> CircuitDataset:
    """``A op B =`` prompts. Label 1 (hard) when an operand has 2+ digits, else 0 (easy); category = op."""
    if count < 1:
        raise InputError("--count must be >= 1")
    names = {"+": "add", "-": "subtract", "*": "multiply"}
    bad = [o for o in ops if o not in names]
    if bad or not ops:
        raise InputError(f"--ops takes characters from '+-*' (got {ops!r})")
    rng = random.Random(seed)
    prompts, seen = [], set()
    attempts = 0
    while len(prompts) < count:
        attempts += 1
        op = ops[len(prompts) % len(ops)]
        hard = len(prompts) % 2 == 1
        a, b = (rng.randint(10, 99), rng.randint(10, 99)) if hard else (rng.randint(1, 9), rng.randint(1, 9))
        text = f"{a} {op} {b} ="
        if text in seen and attempts < 20 * count:
            continue
        seen.add(text)
        value = a + b if op == "+" else a - b if op == "-" else a * b
        prompts.append(DatasetPrompt(text=text, label=int(hard), category=names[op], answer=str(value)))
    rng.shuffle(prompts)
    return CircuitDataset(name="arithmetic", kind="arithmetic", labels=["easy", "hard"], seed=seed,
                          description="single-digit (easy) vs two-digit (hard) operands", prompts=prompts)


def _read_lines(path: str) -> list[str]:
    p = Path(path)
    lines = [ln.rstrip("\r\n") for ln in read_text(p, "prompt file").splitlines()]
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise InputError(f"prompt file {p} has no prompts")
    return lines


def binary(positive_file: str, negative_file: str, label_positive: str = "positive",
           label_negative: str = "negative", contrastive: bool = False, name: str | None = None) -> CircuitDataset:
    """Two classes from text files (one prompt per line; trailing spaces kept). ``contrastive``: line i of
    one file pairs with line i of the other (same count required), stored as ``pair`` ids."""
    pos, neg = _read_lines(positive_file), _read_lines(negative_file)
    if contrastive and len(pos) != len(neg):
        raise InputError(f"contrastive files need the same number of lines ({len(pos)} vs {len(neg)})")
    if label_positive == label_negative:
        raise InputError("the two labels must differ")
    prompts = []
    for texts, label in ((neg, 0), (pos, 1)):
        for j, t in enumerate(texts):
            prompts.append(DatasetPrompt(text=t, label=label, pair=j if contrastive else None))
    return CircuitDataset(name=name or f"{label_positive}_vs_{label_negative}",
                          kind="contrastive" if contrastive else "binary",
                          labels=[label_negative, label_positive], prompts=prompts)


# -- files -----------------------------------------------------------------------------------
def _validation_message(exc: ValidationError) -> str:
    e = exc.errors()[0]
    where = ".".join(str(x) for x in e["loc"]) or "top level"
    return f"{where}: {e['msg']}"


def validate(data: object, source: str) -> CircuitDataset:
    if not isinstance(data, dict):
        raise InputError(f"malformed dataset {source}: expected a JSON object with 'prompts'")
    if "prompts" not in data:
        raise InputError(f"malformed dataset {source}: no 'prompts' list")
    data = dict(data)
    data.setdefault("name", Path(source).stem)
    try:
        ds = CircuitDataset.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"malformed dataset {source}: {_validation_message(exc)}") from None
    if not ds.prompts:
        raise InputError(f"malformed dataset {source}: no prompts")
    for i, p in enumerate(ds.prompts):
        if p.label >= len(ds.labels):
            raise InputError(f"malformed dataset {source}: prompts.{i}.label {p.label} has no name "
                             f"(labels: {ds.labels})")
    return ds


def load_dataset(path: str | Path) -> CircuitDataset:
    p = Path(path)
    text = read_text(p, "dataset")
    if p.suffix == ".jsonl":
        header: dict = {}
        prompts = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"malformed dataset {p}: line {n}: {exc.msg}") from None
            if isinstance(obj, dict) and "text" not in obj and not prompts and not header:
                header = obj
            else:
                prompts.append(obj)
        return validate({**header, "prompts": prompts}, str(p))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed dataset {p}: line {exc.lineno}: {exc.msg}") from None
    return validate(data, str(p))


def save_dataset(ds: CircuitDataset, path: str | Path) -> Path:
    """JSON (``.json``) or JSONL (``.jsonl``: a header line, then one prompt per line); atomic."""
    p = output_name(path, ".json", ".jsonl")
    if p.suffix == ".jsonl":
        header = ds.model_dump(exclude={"prompts"}, exclude_none=True)
        lines = [json.dumps(header)] + [json.dumps(x.model_dump(exclude_none=True)) for x in ds.prompts]
        write_text(p, "\n".join(lines) + "\n")
    else:
        write_text(p, ds.model_dump_json(indent=2, exclude_none=True) + "\n")
    return p


def summarize(ds: CircuitDataset, path: str, samples: int = 10, seed: int = 0) -> DatasetSummary:
    labels = Counter(ds.labels[p.label] for p in ds.prompts)
    cats = Counter(ds.categories)
    idx = list(range(len(ds.prompts)))
    random.Random(seed).shuffle(idx)
    return DatasetSummary(path=path, name=ds.name, kind=ds.kind, total=len(ds.prompts),
                          labels=[LabelCount(name=n, count=labels.get(n, 0)) for n in ds.labels],
                          categories=[LabelCount(name=n, count=c) for n, c in sorted(cats.items())],
                          samples=[ds.prompts[i] for i in sorted(idx[:max(0, samples)])])
