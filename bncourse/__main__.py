"""Command line of the course: ``python -m bncourse COMMAND``.

Commands:

* ``exercises`` -- list every exercise id with its chapter and expected signature.
* ``grade PATH...`` -- grade learner notebooks, folders of them, or a class (a folder of one
  folder per learner; ``--gradebook``, ``--class-report``, ``--jobs N``); exit 0 only if
  all pass.
* ``make-exercises`` -- (re)generate exercises/ from notebooks/ (``--check``: only compare).
* ``run-notebooks PATH...`` -- execute notebooks in place (what is committed in notebooks/).
* ``bench [--shape 64x64x32x32 ... --channels-last] [--repeats N] [--no-compile] [--json
  FILE]`` -- on the CPU: forward+backward time of ``bncourse.torch_bn`` (eager), of
  ``bncourse.compiled_bn`` (``torch.compile``; its compile time apart), of ``torch.nn`` and
  of a plain copy, as ratios, in one run (default: (64, 64, 32, 32), (256, 256, 14, 14) NCHW
  and channels_last, and (8192, 512)).
* ``bench --device cuda [--shape ... --dtype bfloat16 --channels-last] [--json FILE]`` -- on a
  GPU: chapter 8's benchmark (:mod:`bncourse.gpu_bench`): the Triton kernels, cuDNN, ATen
  without cuDNN, torch_bn and a copy, forward and forward+backward; ``--json
  bncourse/data/gpu_bench.json`` records the results the chapter shows.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path


def _cmd_exercises(args: argparse.Namespace) -> int:
    from .checks import EXERCISES

    width = max(len(ex_id) for ex_id in EXERCISES)
    for ex in EXERCISES.values():
        print(f"{ex.id:<{width}}  {ex.chapter}: {ex.title}")
        print(f"{'':<{width}}  {ex.signature}")
    return 0


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _cmd_grade(args: argparse.Namespace) -> int:
    from .grading.cli import main

    return main(
        args.paths,
        json_path=args.json,
        junit_path=args.junit,
        markdown_path=args.markdown,
        timeout=args.timeout,
        jobs=args.jobs,
        gradebook_path=args.gradebook,
        class_report_path=args.class_report,
        require_isolation=args.require_isolation,
        allow_unisolated=args.allow_unisolated,
        notebook_timeout=args.notebook_timeout,
    )


def _usage_error(message: str) -> int:
    """A command line that cannot work: one ``error: ...`` line on stderr, exit status 2
    (argparse's status for a usage error), before any work is done."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def _writable_file(path: str) -> str | None:
    """Why ``path`` cannot be written (``None`` if it can), found before the work that
    would end by writing it: by opening it to append, as the writing will (a file that did
    not exist is removed again)."""
    target = Path(path)
    existed = target.exists()
    try:
        with open(target, "a"):
            pass
    except OSError as error:
        return error.strerror or type(error).__name__
    if not existed:
        target.unlink()
    return None


def _cmd_make_exercises(args: argparse.Namespace) -> int:
    from .exercise_notebooks import check_folders, out_of_sync, write_exercises

    try:
        check_folders(Path(args.source), Path(args.target))
    except ValueError as error:
        return _usage_error(str(error))
    if args.check:
        problems = out_of_sync(Path(args.source), Path(args.target))
        for problem in problems:
            print(f"out of sync: {args.target}/{problem}")
        if problems:
            print("run: python -m bncourse make-exercises")
        return 1 if problems else 0
    try:
        written = write_exercises(Path(args.source), Path(args.target))
    except ValueError as error:  # a notebook in the target that make-exercises did not write
        return _usage_error(str(error))
    for path in written:
        print(f"wrote {path}")
    return 0


def _cmd_run_notebooks(args: argparse.Namespace) -> int:
    import nbformat

    from .notebooks import execute_in_place

    for path in args.paths:
        if not Path(path).is_file():
            return _usage_error(f"no such notebook: {path}")
    for path in args.paths:  # every one readable before the first runs
        try:
            nbformat.read(path, as_version=4)
        except Exception as error:  # not JSON (NotJSONError), not a notebook, unreadable
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            return _usage_error(f"{path} is not a notebook: {reason[:200]}")
    for path in args.paths:
        print(f"executing {path}", flush=True)
        execute_in_place(Path(path), timeout=args.timeout)
    return 0


def _out_of_memory(error: BaseException) -> str | None:
    """The allocator's one-line reason if ``error`` is a failed allocation, else ``None``."""
    import torch

    if isinstance(error, RuntimeError) and not isinstance(error, torch.OutOfMemoryError):
        text = str(error)
        if "can't allocate" not in text and "out of memory" not in text:
            return None
    elif not isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return None
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return re.sub(r"^\[enforce fail at [^\]]*\]\s*[^.]*\.\s*", "", line)[:300]


def _cmd_bench(args: argparse.Namespace) -> int:
    try:
        return _bench(args)
    except (MemoryError, RuntimeError) as error:  # a --shape too large for this machine
        reason = _out_of_memory(error)
        if reason is None:
            raise
        print(f"error: not enough memory for the benchmark's tensors: {reason}", file=sys.stderr)
        return 2


def _bench(args: argparse.Namespace) -> int:
    import torch

    from .bench import main as bench_main
    from .bench import parse_shape

    try:
        shapes = [parse_shape(text) for text in args.shape] if args.shape else None
    except ValueError as error:
        return _usage_error(str(error))
    try:
        device = torch.device(args.device)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        return _usage_error(
            f"--device is cpu or cuda (cuda:N for another GPU), got {args.device!r}"
        )
    if args.repeats < 1:
        return _usage_error(f"--repeats must be at least 1, got {args.repeats}")
    if args.warmup < 0:
        return _usage_error(f"--warmup must be 0 or more, got {args.warmup}")
    if args.json and (problem := _writable_file(args.json)):
        return _usage_error(f"cannot write --json {args.json}: {problem}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return _usage_error("--device cuda asked for, but CUDA is not available here")
        from .gpu_bench import Case
        from .gpu_bench import main as gpu_main

        layout = "channels_last" if args.channels_last else "contiguous"
        if shapes and args.channels_last and any(len(s) not in (4, 5) for s in shapes):
            print("error: --channels-last needs 4-d or 5-d shapes", file=sys.stderr)
            return 2
        cases = [Case(s, args.dtype, layout) for s in shapes] if shapes else None
        report = gpu_main(cases, device=args.device, json_path=args.json)
        return 0 if all(r["checked"] for r in report["results"]) else 1
    if args.dtype != "float32":
        print(
            "error: --dtype is for --device cuda (the CPU benchmark times float32 inputs)",
            file=sys.stderr,
        )
        return 2
    layouts = None
    if shapes and args.channels_last:
        if any(len(s) not in (4, 5) for s in shapes):
            print("error: --channels-last needs 4-d or 5-d shapes", file=sys.stderr)
            return 2
        layouts = ["channels_last"] * len(shapes)
    elif args.channels_last:
        print("error: --channels-last applies to the --shape cases", file=sys.stderr)
        return 2
    bench_main(
        shapes,
        device=args.device,
        repeats=args.repeats,
        warmup=args.warmup,
        json_path=args.json,
        layouts=layouts,
        compiled=not args.no_compile,
    )
    print(
        "(the Triton kernels are timed with --device cuda only: on the CPU they run in "
        "Triton's interpreter, which checks them but is not meant to be fast)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bncourse", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("exercises", help="list exercise ids and signatures").set_defaults(
        func=_cmd_exercises
    )
    grade = commands.add_parser("grade", help="grade learner notebooks")
    grade.add_argument(
        "paths", nargs="+", metavar="PATH", help="notebooks, or folders of notebooks"
    )
    grade.add_argument("--json", metavar="FILE", help="write the results as JSON")
    grade.add_argument("--junit", metavar="FILE", help="write the results as JUnit XML")
    grade.add_argument(
        "--markdown", metavar="FILE", help="append a Markdown table (CI job summary)"
    )
    grade.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=120,
        metavar="SECONDS",
        help="per-cell time limit, a positive number (default 120)",
    )
    grade.add_argument(
        "--notebook-timeout",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help="time limit for grading one notebook in all, its cells and its checks (default "
        "1800, or 5 times --timeout if that is longer); past it, the exercises not yet "
        "decided are TIMEOUT",
    )
    grade.add_argument(
        "--jobs",
        type=_positive_int,
        default=1,
        metavar="N",
        help="grade N notebooks at a time, each in its own processes (default 1)",
    )
    grade.add_argument(
        "--gradebook", metavar="FILE", help="write a gradebook CSV (a row per learner)"
    )
    grade.add_argument(
        "--class-report",
        metavar="FILE",
        help="write a Markdown class report: the misconceptions to reteach, per exercise",
    )
    grade.add_argument(
        "--require-isolation",
        action="store_true",
        help="refuse to grade without the sandbox (bubblewrap); a class run always does",
    )
    grade.add_argument(
        "--allow-unisolated",
        action="store_true",
        help="grade without the sandbox anyway: reports say they are not tamper-proof",
    )
    grade.set_defaults(func=_cmd_grade)
    make = commands.add_parser("make-exercises", help="generate exercises/ from notebooks/")
    make.add_argument("--source", default="notebooks", help="chapter notebooks (default notebooks)")
    make.add_argument("--target", default="exercises", help="output folder (default exercises)")
    make.add_argument(
        "--check", action="store_true", help="only report whether the folder is in sync"
    )
    make.set_defaults(func=_cmd_make_exercises)
    run = commands.add_parser("run-notebooks", help="execute notebooks in place")
    run.add_argument("paths", nargs="+")
    run.add_argument(
        "--timeout", type=_positive_int, default=300, help="seconds per cell (default 300)"
    )
    run.set_defaults(func=_cmd_run_notebooks)
    bench = commands.add_parser(
        "bench",
        help="time BatchNorm: torch_bn, compiled_bn, torch.nn and a copy (CPU); with the Triton "
        "kernels and cuDNN (--device cuda)",
    )
    bench.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    bench.add_argument(
        "--shape",
        action="append",
        metavar="NxCx...",
        help="input shape, e.g. 64x64x32x32; repeat for several (default: bench.DEFAULT_CASES "
        "on the CPU: 64x64x32x32, 256x256x14x14 (also channels_last), 8192x512, 100000x32, "
        "256x2048x7x7; on CUDA ResNet-50's BatchNorm layers at batch 256 and two BatchNorm1d "
        "inputs)",
    )
    bench.add_argument("--repeats", type=int, default=20, help="timed runs per shape")
    bench.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    bench.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float16", "bfloat16"],
        help="input dtype of the --shape cases (--device cuda only)",
    )
    bench.add_argument(
        "--channels-last",
        action="store_true",
        help="channels_last layout for the --shape cases",
    )
    bench.add_argument(
        "--no-compile",
        action="store_true",
        help="leave out bncourse.compiled_bn (no torch.compile; CPU only)",
    )
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    bench.set_defaults(func=_cmd_bench)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
