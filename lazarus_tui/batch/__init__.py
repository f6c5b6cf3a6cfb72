"""Headless subcommands: ``lazarus --batch <name> ...``. Never imports Textual."""

from __future__ import annotations

import importlib
import sys

from engine.errors import Cancelled, LazarusError

# A command NAME lives in lazarus_tui/batch/<NAME with - as _>.py and defines main(argv) -> int;
# these names map to other modules (to avoid clashing with packages).
_RENAMED = {"models": "models_cmd", "hooks": "hooks_cmd"}
_NOT_COMMANDS = {"common", "models_cmd", "hooks_cmd"}


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


def dispatch(argv: list[str]) -> int:
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
    try:
        module = importlib.import_module(f"lazarus_tui.batch.{COMMANDS[name]}")
        return int(module.main(rest) or 0)
    except Cancelled:
        err.print("interrupted", markup=False)
        return 130
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        return 130
    except LazarusError as exc:
        err.print(f"lazarus {name}: {exc}", markup=False)
        return exc.exit_code
    except BrokenPipeError:
        return 0
    except SystemExit as exc:  # argparse -h
        return int(exc.code or 0)


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
