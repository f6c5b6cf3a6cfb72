"""Files in and out: the one writer for every output, the one reader for user text files.

Writing. A new path or an existing regular file is written to a temp file next to it and
renamed into place, so an interrupted or failed run never leaves a half-written or replaced
file; the new file gets the mode the user's umask gives (a replaced file keeps its mode). A
path that exists but is not a regular file (``/dev/null``, a FIFO, ``/dev/stdout``) is written
through, never replaced. Every failure is one line: a path that cannot take a file (a
directory, a missing or read-only directory) is an ``InputError`` (exit 2); a write that fails
on the way (a full disk, an I/O error) is an ``OutputError`` (exit 1). ``check_output`` runs the
same checks before any work, so a bad ``-o`` is refused before a model loads.

Reading. User text (prompt files, datasets, word lists) must be UTF-8; ``read_text`` says where
it is not. ``check_utf8`` does the same for command-line strings, where Python keeps bytes
that are not UTF-8 as surrogate escapes.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from engine.errors import InputError, OutputError

# Errors that say the path itself cannot take a file (the user's to fix: exit 2).
_PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.EISDIR,
                errno.ENAMETOOLONG, errno.ELOOP}


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _fail(target: Path, exc: OSError) -> Exception:
    if exc.errno in _PATH_ERRNOS:
        return InputError(f"cannot write {target}: {_reason(exc)}")
    return OutputError(f"cannot write {target}: {_reason(exc)}")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _resolve(path: str | Path) -> Path:
    """The path to write: a symlink's target (the link stays a link), else the path itself."""
    target = Path(path)
    return Path(os.path.realpath(target)) if target.is_symlink() else target


def _write_through(target: Path) -> bool:
    """True for an existing path that is not a regular file or directory (device, FIFO, socket)."""
    try:
        mode = os.stat(target).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def output_name(path: str | Path, *suffixes: str) -> Path:
    """``path`` with ``suffixes[0]`` appended unless it has one of ``suffixes`` already; a device
    or FIFO (``/dev/null``) keeps its name, since it is written through."""
    target = Path(path)
    if target.suffix in suffixes or _write_through(target):
        return target
    return target.with_name(target.name + suffixes[0])


def check_output(path: str | Path, directory: bool = False) -> Path:
    """Refuse now (InputError, one line) an output path that ``write_atomic`` could not write.

    ``directory=True``: ``path`` is a directory that will hold files (created if missing, as the
    writers of chart and direction directories do). Nothing is left behind by the check.
    """
    target = _resolve(path)
    if directory:
        if target.exists() and not target.is_dir():
            raise InputError(f"cannot write into {target}: not a directory")
        parent = target if target.is_dir() else target.parent
    else:
        if target.is_dir():
            raise InputError(f"cannot write {target}: it is a directory")
        if _write_through(target):
            if not os.access(target, os.W_OK):
                raise InputError(f"cannot write {target}: permission denied")
            return target
        parent = target.parent
    if not parent.is_dir():
        what = "does not exist" if not parent.exists() else "is not a directory"
        raise InputError(f"cannot write {target}: directory {parent} {what}")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".check", dir=str(parent))
    except OSError as exc:
        raise _fail(target, exc) from None
    os.close(fd)
    os.unlink(probe)
    return target


def make_dir(path: str | Path) -> Path:
    """Create an output directory (its parent must exist); one-line errors as for files."""
    target = check_output(path, directory=True)
    try:
        target.mkdir(exist_ok=True)
    except OSError as exc:
        raise _fail(target, exc) from None
    return target


def write_atomic(path: str | Path, write: Callable[[IO[Any]], object], binary: bool = False) -> Path:
    """Call ``write(fh)`` on a temp file next to ``path``, then rename it into place.

    Returns the path written (a symlink's target). See the module docstring for what is
    written through and which errors become which one-line error.
    """
    target = _resolve(path)
    if target.is_dir():
        raise InputError(f"cannot write {target}: it is a directory")
    if _write_through(target):
        try:
            with open(target, "wb" if binary else "w", encoding=None if binary else "utf-8") as fh:
                write(fh)
        except OSError as exc:
            raise _fail(target, exc) from None
        return target
    if not target.parent.is_dir():
        raise InputError(f"cannot write {target}: directory {target.parent} does not exist")
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = 0o666 & ~_umask()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=str(target.parent))
    except OSError as exc:
        raise _fail(target, exc) from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as fh:
            write(fh)
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _fail(target, exc) from None
        raise
    return target


def write_text(path: str | Path, text: str) -> Path:
    """``write_atomic`` for a string (UTF-8)."""
    return write_atomic(path, lambda fh: fh.write(text))


def save_npz_atomic(path: str | Path, fields: dict[str, Any]) -> Path:
    """``np.savez`` of plain arrays (no pickles), atomically."""
    import numpy as np

    return write_atomic(path, lambda fh: np.savez(fh, **fields), binary=True)


def save_figure(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """A Matplotlib figure as PNG, atomically."""
    return write_atomic(path, lambda fh: fig.savefig(fh, format="png", **kwargs), binary=True)


# -- reading -------------------------------------------------------------------------------------
def _not_utf8(what: str, data: bytes, exc: UnicodeDecodeError) -> InputError:
    line = data.count(b"\n", 0, exc.start) + 1
    return InputError(f"{what} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at line {line}, "
                      f"offset {exc.start}); save it as UTF-8")


def read_text(path: str | Path, what: str = "file") -> str:
    """A user's text file, strictly UTF-8 (a BOM is dropped); one-line InputError otherwise."""
    p = Path(path)
    label = f"{what} {p}"
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what} not found: {p}") from None
    except IsADirectoryError:
        raise InputError(f"{label} is a directory") from None
    except OSError as exc:
        raise InputError(f"cannot read {label}: {_reason(exc)}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _not_utf8(label, data, exc) from None


def check_utf8(text: str, what: str) -> str:
    """A command-line string: refuse the surrogate escapes that stand for bytes that are not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        ch = ord(text[exc.start])
        byte = f"byte 0x{ch - 0xDC00:02x}" if 0xDC80 <= ch <= 0xDCFF else f"U+{ch:04X}"
        raise InputError(f"{what} is not valid UTF-8 ({byte} at character {exc.start}); "
                         f"check the terminal's or the script's encoding") from None
    return text
