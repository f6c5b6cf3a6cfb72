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
    from lazarus_tui.batch.common import err

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


if __name__ == "__main__":
    sys.exit(dispatch(sys.argv[1:]))
