"""Command line of the course: ``python -m bncourse COMMAND``.

Commands:

* ``exercises`` -- list every exercise id with its chapter and expected signature.
* ``run-notebooks PATH...`` -- execute notebooks in place (what is committed in notebooks/).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_exercises(args: argparse.Namespace) -> int:
    from .checks import EXERCISES

    width = max(len(ex_id) for ex_id in EXERCISES)
    for ex in EXERCISES.values():
        print(f"{ex.id:<{width}}  {ex.chapter}: {ex.title}")
        print(f"{'':<{width}}  {ex.signature}")
    return 0


def _cmd_run_notebooks(args: argparse.Namespace) -> int:
    from .notebooks import execute_in_place

    for path in args.paths:
        print(f"executing {path}", flush=True)
        execute_in_place(Path(path), timeout=args.timeout)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bncourse", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("exercises", help="list exercise ids and signatures").set_defaults(
        func=_cmd_exercises)
    run = commands.add_parser("run-notebooks", help="execute notebooks in place")
    run.add_argument("paths", nargs="+")
    run.add_argument("--timeout", type=int, default=300, help="seconds per cell")
    run.set_defaults(func=_cmd_run_notebooks)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
