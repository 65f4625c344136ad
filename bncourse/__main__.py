"""Command line of the course: ``python -m bncourse COMMAND``.

Commands:

* ``exercises`` -- list every exercise id with its chapter and expected signature.
* ``grade PATH...`` -- grade learner notebooks (or folders of them); exit 0 only if all pass.
* ``make-exercises`` -- (re)generate exercises/ from notebooks/ (``--check``: only compare).
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


def _cmd_grade(args: argparse.Namespace) -> int:
    from .grader import main

    return main(args.paths, json_path=args.json, junit_path=args.junit,
                markdown_path=args.markdown, timeout=args.timeout)


def _cmd_make_exercises(args: argparse.Namespace) -> int:
    from .exercise_notebooks import out_of_sync, write_exercises

    if args.check:
        problems = out_of_sync(Path(args.source), Path(args.target))
        for problem in problems:
            print(f"out of sync: {args.target}/{problem}")
        if problems:
            print("run: python -m bncourse make-exercises")
        return 1 if problems else 0
    for path in write_exercises(Path(args.source), Path(args.target)):
        print(f"wrote {path}")
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
    grade = commands.add_parser("grade", help="grade learner notebooks")
    grade.add_argument("paths", nargs="+", metavar="PATH", help="notebooks, or folders of notebooks")
    grade.add_argument("--json", metavar="FILE", help="write the results as JSON")
    grade.add_argument("--junit", metavar="FILE", help="write the results as JUnit XML")
    grade.add_argument("--markdown", metavar="FILE", help="append a Markdown table (CI job summary)")
    grade.add_argument("--timeout", type=int, default=120, metavar="SECONDS",
                       help="per-cell time limit (default 120)")
    grade.set_defaults(func=_cmd_grade)
    make = commands.add_parser("make-exercises", help="generate exercises/ from notebooks/")
    make.add_argument("--source", default="notebooks", help="chapter notebooks (default notebooks)")
    make.add_argument("--target", default="exercises", help="output folder (default exercises)")
    make.add_argument("--check", action="store_true", help="only report whether the folder is in sync")
    make.set_defaults(func=_cmd_make_exercises)
    run = commands.add_parser("run-notebooks", help="execute notebooks in place")
    run.add_argument("paths", nargs="+")
    run.add_argument("--timeout", type=int, default=300, help="seconds per cell")
    run.set_defaults(func=_cmd_run_notebooks)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
