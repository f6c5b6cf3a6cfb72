"""Headless subcommands: ``lazarus --batch <name> ...``. Never imports Textual."""

from __future__ import annotations

import importlib
import sys

from engine.errors import Cancelled, LazarusError, OutputError

# A command NAME lives in lazarus_tui/batch/<NAME with - as _>.py and defines main(argv) -> int;
# these names map to other modules (to avoid clashing with packages).
_RENAMED = {"models": "models_cmd", "hooks": "hooks_cmd"}
_NOT_COMMANDS = {"common", "flags", "models_cmd", "hooks_cmd"}


def commands() -> dict[str, str]:
    import pkgutil
    from pathlib import Path

    found = {}
    for mod in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if mod.name.startswith("_") or mod.name in _NOT_COMMANDS:
            continue
        found[mod.name.replace("_", "-")] = mod.name
    for name, module in _RENAMED.items():
        found[name] = module
    return dict(sorted(found.items()))


COMMANDS = commands()


def usage() -> str:
    return "usage: lazarus --batch {" + ",".join(COMMANDS) + "} [options]   (lazarus --batch NAME -h for help)"


class _Stdout:
    """sys.stdout, with a failed write (full disk, closed pipe) raised as one error we can name."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(f"cannot write to stdout: {exc.strerror or exc}") from None

    def write(self, text: str) -> int:
        return self._call(self._stream.write, text)

    def flush(self) -> None:
        self._call(self._stream.flush)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _drop_stdout() -> None:
    """After stdout failed: point fd 1 at /dev/null so that later flushes (at exit) cannot fail."""
    import os

    stream = sys.stdout._stream if isinstance(sys.stdout, _Stdout) else sys.stdout
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    sys.stdout = stream


def _validation_message(exc) -> tuple[str, int]:
    """A pydantic error as one line: the value's place and what is wrong with it. A request
    (the user's input) is exit 2; anything else is the analysis failing (exit 1)."""
    e = exc.errors()[0]
    where = ".".join(str(x) for x in e["loc"]) or "value"
    return f"invalid {where} in {exc.title}: {e['msg']}", 2 if exc.title.endswith("Request") else 1


def dispatch(argv: list[str]) -> int:
    """Run one command; every failure ends here as one line on stderr and its exit code
    (docs/errors.md): LazarusError's own code, pydantic errors 2 (requests) or 1, an OSError
    not caught nearer 1, interrupts 130. A closed stdout (``| head``) ends quietly with 0."""
    from pydantic import ValidationError

    from engine.distributed import env_rank, launched
    from lazarus_tui.batch.common import err

    if launched() and env_rank() != 0:
        return _dispatch_quiet_rank(argv, env_rank())
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        err.print(f"lazarus: unknown batch command {name!r}; {usage()}", markup=False)
        return 2
    stdout = sys.stdout
    sys.stdout = _Stdout(stdout)
    try:
        module = importlib.import_module(f"lazarus_tui.batch.{COMMANDS[name]}")
        code = int(module.main(rest) or 0)
        sys.stdout.flush()
        return code
    except (Cancelled, KeyboardInterrupt):
        err.print("interrupted", markup=False)
        return 130
    except LazarusError as exc:
        if isinstance(exc, OutputError):
            _drop_stdout()
        err.print(f"lazarus {name}: {exc}", markup=False)
        return exc.exit_code
    except ValidationError as exc:
        message, code = _validation_message(exc)
        err.print(f"lazarus {name}: {message}", markup=False)
        return code
    except BrokenPipeError:
        _drop_stdout()
        return 0
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        err.print(f"lazarus {name}: {exc.strerror or exc}{where}", markup=False)
        return 1
    except SystemExit as exc:  # argparse -h
        return int(exc.code or 0)
    finally:
        if isinstance(sys.stdout, _Stdout):
            sys.stdout = stdout
        from lazarus_tui.batch.common import close_runners

        close_runners()


def shares_work(argv: list[str]) -> bool:
    """Whether the command splits its work among distributed ranks (docs/distributed.md); the others
    run on rank 0 alone."""
    if argv[:1] in (["ablate"], ["steer"]):  # steer decides itself (greedy runs only)
        return True
    if argv[:1] in (["probe"], ["layer"], ["format-sensitivity"], ["neurons"], ["activation-diff"]):
        return True  # their forward batches (engine.representations.last_hidden)
    if argv[:1] in (["generate"], ["analyze"]) and "--pipeline" in argv:
        return True
    return argv[:1] == ["circuit"] and (argv[1:2] == ["collect"] or argv[1:3] == ["probes", "run"])


def _dispatch_quiet_rank(argv: list[str], rank: int) -> int:
    """A rank other than 0 under a distributed launcher: a command that does not share its work exits at
    once (rank 0 runs it); otherwise stdout goes nowhere, and on stderr only errors that rank 0 cannot
    report (bad input is the same on every rank and rank 0 says it; a failure
    reported through the job's rounds is printed by rank 0, naming this rank)."""
    import os
    import time

    from engine.distributed import RankFailed
    from engine.errors import InputError
    from lazarus_tui.batch.common import err

    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    name = argv[0] if argv else "?"
    if not shares_work(argv):
        return 0  # rank 0 runs it alone
    try:
        module = importlib.import_module(f"lazarus_tui.batch.{COMMANDS[name]}")
        return int(module.main(argv[1:]) or 0)
    except (Cancelled, KeyboardInterrupt):
        time.sleep(1.0)  # let rank 0 say "interrupted" before the launcher stops the job
        return 130
    except RankFailed as exc:
        if exc.reported:
            time.sleep(1.0)
        else:
            err.print(f"lazarus {name} [rank {rank}]: {exc}", markup=False)
        return exc.exit_code
    except InputError as exc:
        return exc.exit_code
    except LazarusError as exc:
        err.print(f"lazarus {name} [rank {rank}]: {exc}", markup=False)
        return exc.exit_code
    except BrokenPipeError:
        return 0
    except SystemExit as exc:
        return int(exc.code or 0)

if __name__ == "__main__":
    sys.exit(dispatch(sys.argv[1:]))
