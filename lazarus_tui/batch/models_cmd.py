"""`lazarus --batch models list|pull NAME...|families`: the bundled model cache, and the family matrix."""

from __future__ import annotations

import json

from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn

from engine.models import registry
from lazarus_tui.batch.common import ArgumentParser, err, out


def main(argv: list[str]) -> int:
    p = ArgumentParser(prog="lazarus --batch models", description="list or pull bundled models")
    sub = p.add_subparsers(dest="action", required=True, parser_class=ArgumentParser)
    ls = sub.add_parser("list", help="bundled aliases and cached models")
    ls.add_argument("--json", action="store_true")
    pull = sub.add_parser("pull", help="download, assemble and verify bundled models")
    pull.add_argument("names", nargs="+", help=f"aliases: {', '.join(registry.BUNDLED)}")
    pull.add_argument("--force", action="store_true", help="fetch again even when a verified copy exists")
    fam = sub.add_parser("families", help="every mlx-lm model_type: verified / partial / untested / refused")
    fam.add_argument("--json", action="store_true")
    fam.add_argument("--markdown", action="store_true", help="the table docs/models.md carries")
    args = p.parse_args(argv)
    if args.action == "families":
        return _families(args.json, args.markdown)
    if args.action == "list":
        rows = registry.cache_listing()
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        for row in rows:
            state = ("verified" if row["verified"] else "present") if row["present"] else "not pulled"
            out.print(f"{row['name']:<40} {row['kind']:<9} {state:<10} {row['description']}")
        return 0
    for name in args.names:
        registry._bundled(name)  # unknown alias → exit 2 before any download
    for name in args.names:
        if registry.is_verified(name) and not args.force:
            err.print(f"{name}: present and verified ({registry.alias_path(name)})")
            continue
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=err,
                      transient=True) as prog:
            task = prog.add_task(name, total=None)

            def report(desc: str, done: int, total: int, task: TaskID = task) -> None:
                prog.update(task, description=desc, completed=done, total=total)

            path = registry.ensure(name, report) if not args.force else registry.pull(name, report, force=True)
        err.print(f"{name}: {path}")
    return 0


def _families(as_json: bool, markdown: bool) -> int:
    from engine.models import family_matrix as fm

    rows = fm.family_rows()
    if as_json:
        print(json.dumps(fm.as_dicts(rows), indent=2))
    elif markdown:
        print(fm.as_markdown(rows), end="")
    else:
        width = max(len(r.model_type) for r in rows)
        for r in rows:
            text = "; ".join(x for x in (r.detail if r.status != "untested" else "", r.note) if x)
            out.print(f"{r.model_type:<{width}}  {r.status:<8}  {text}", markup=False)
        c = fm.counts(rows)
        err.print(", ".join(f"{n} {s}" for s, n in c.items())
                  + " (untested: found by discovery, probed at load; `verify -m DIR` checks one)")
    return 0
