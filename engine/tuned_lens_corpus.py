"""Text for training and evaluating a tuned lens.

The default corpus is text every installation has: the docstrings of the Python standard library
(English prose about code). Files are split deterministically by a hash of their path relative to
the library root: one in eight is held out for ``tuned-lens eval``, the rest is for training, so
the default eval text never overlaps the default training text. Within a split, files are taken
in a fixed pseudo-random order until enough tokens are gathered.

A user corpus (``--corpus FILE|DIR``) is a text file, or every ``.txt``/``.md``/``.rst`` file
under a directory (sorted).
"""

from __future__ import annotations

import ast
import hashlib
import random
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from engine.errors import InputError

EVAL_ONE_IN = 8  # files held out for eval: sha256(relative path) % 8 == 0
MIN_DOCSTRING_CHARS = 200  # shorter docstrings are mostly signatures, not prose
ORDER_SEED = 20230101  # the fixed order files are read in
TEXT_SUFFIXES = (".txt", ".md", ".rst")


@dataclass(frozen=True)
class Corpus:
    description: str  # what the lens file records
    documents: list[str]


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _split_of(rel: str) -> Literal["train", "eval"]:
    return "eval" if int(hashlib.sha256(rel.encode()).hexdigest(), 16) % EVAL_ONE_IN == 0 else "train"


def _stdlib_files(split: Literal["train", "eval"]) -> list[Path]:
    root = stdlib_root()
    files = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        parts = set(rel.split("/"))
        if parts & {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}:
            continue
        if _split_of(rel) == split:
            files.append(p)
    random.Random(ORDER_SEED).shuffle(files)
    return files


def docstrings(source: str) -> list[str]:
    """The module, class and function docstrings of a Python source, long ones only."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= MIN_DOCSTRING_CHARS:
                out.append(doc)
    return out


def _stdlib_documents(split: Literal["train", "eval"]) -> Iterator[str]:
    for path in _stdlib_files(split):
        try:
            docs = docstrings(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
        if docs:
            yield "\n\n".join(docs)


def _user_documents(source: Path) -> Iterator[str]:
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.suffix in TEXT_SUFFIXES)
    for p in files:
        try:
            text = p.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise InputError(f"cannot read corpus file {p}: {exc.strerror}") from exc
        if text.strip():
            yield text


def load_corpus(source: str | None, split: Literal["train", "eval"], min_chars: int) -> Corpus:
    """Documents from ``source`` (None: the standard library's docstrings, ``split``) until about
    ``min_chars`` characters are gathered (a user corpus is read whole)."""
    if source is None:
        docs, total = [], 0
        for doc in _stdlib_documents(split):
            docs.append(doc)
            total += len(doc)
            if total >= min_chars:
                break
        desc = f"python{sysconfig.get_python_version()} stdlib docstrings ({split} split: files with " \
               f"sha256(path) % {EVAL_ONE_IN} {'== 0' if split == 'eval' else '!= 0'})"
        return Corpus(desc, docs)
    p = Path(source).expanduser()
    if not p.exists():
        raise InputError(f"corpus not found: {p}")
    docs = list(_user_documents(p))
    if not docs:
        raise InputError(f"corpus {p} has no text (a directory is read for {', '.join(TEXT_SUFFIXES)} files)")
    return Corpus(f"{p.name} ({len(docs)} file{'s' if len(docs) != 1 else ''})", docs)


def sequences(tokenize, corpus: Corpus, seq_len: int, max_sequences: int | None = None) -> list[list[int]]:
    """Token sequences of exactly ``seq_len`` tokens, each from one document (a document's tail
    shorter than ``seq_len`` is dropped). ``tokenize(text) -> ids``."""
    out: list[list[int]] = []
    for doc in corpus.documents:
        ids = tokenize(doc)
        for start in range(0, len(ids) - seq_len + 1, seq_len):
            out.append(ids[start:start + seq_len])
            if max_sequences is not None and len(out) >= max_sequences:
                return out
    return out
