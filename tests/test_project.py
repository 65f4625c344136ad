"""The project's conventions, checked: quick start, CI, pins, table of contents, notebooks.

These tests keep the promises of README.md and CONTRIBUTING.md true as chapters are added: every
notebook is in the book, is committed executed, ends with exercises in the agreed format
(exercise block, dropdown solution with BEGIN/END SOLUTION markers, check cell), and every
exercise id it checks is registered in bncourse.checks.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from bncourse.checks import EXERCISES

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_readme_quick_start_is_two_commands_and_ci_runs_the_second():
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1]
    block = re.search(r"```\w*\n(.*?)```", quick_start, re.S).group(1)
    commands = [
        line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()
    ]
    assert commands == ["python3 course.py book", "python3 course.py test"]
    first_block = re.search(r"```\w*\n(.*?)```", readme, re.S).group(1)
    assert first_block == block, "the quick start must be the README's first code block"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "rm -rf .venv" in ci, ".ci/run must start from a fresh virtual environment"
    assert commands[1] in ci


def pins_for(environment: dict[str, str]) -> dict[str, str]:
    """{name: version} of requirements.txt for one environment (its markers evaluated)."""
    from packaging.markers import Marker

    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        requirement, _, marker = line.split("#")[0].partition(";")
        if not requirement.strip() or (marker.strip() and not Marker(marker).evaluate(environment)):
            continue
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][A-Za-z0-9_.\-]*", requirement.strip()), line
        name, version = requirement.strip().lower().split("==")
        assert name not in pins, f"{name} is pinned twice for {environment}"
        pins[name] = version
    return pins


PLATFORMS = {
    "linux": ("linux", "Linux", "posix"),
    "darwin": ("darwin", "Darwin", "posix"),
    "win32": ("win32", "Windows", "nt"),
}


@pytest.mark.parametrize("python", ["3.10.13", "3.11.2", "3.11.7", "3.12.1", "3.13.0"])
@pytest.mark.parametrize("system", PLATFORMS)
def test_requirements_pin_one_version_of_everything_for_every_python(python, system):
    """requirements.txt is one lock for every supported Python and platform (course.py lock):
    exact pins, at most one per package wherever it is installed. That they also resolve
    from the package index is checked by `course.py check-pins` (in .ci/run)."""
    sys_platform, platform_system, os_name = PLATFORMS[system]
    environment = {
        "python_version": python.rsplit(".", 1)[0],
        "python_full_version": python,
        "sys_platform": sys_platform,
        "platform_system": platform_system,
        "os_name": os_name,
        "platform_machine": "x86_64",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    pins = pins_for(environment)
    assert pins["torch"] == "2.13.0", "the version the course is tested with"
    assert pins["jupyter-book"].startswith("1."), "Jupyter Book 2 cannot build offline"
    assert ("triton" in pins) == (system == "linux"), "Triton publishes Linux wheels only"
    import course

    assert not [name for name in pins if course.CUDA_ONLY.fullmatch(name)], (
        "PyTorch's CUDA libraries stay out of the lock (the CPU build needs none; torch pins them)"
    )
    for needed in [
        "numpy",
        "matplotlib",
        "scikit-learn",
        "pytest",
        "pytest-xdist",
        "hypothesis",
        "sphinx-exercise",
        "sphinx-proof",
        "sphinxcontrib-bibtex",
        "ipykernel",
        "nbclient",
    ]:
        assert needed in pins, f"{needed} is not pinned"


def _toc_files(entries):
    for entry in entries:
        if "file" in entry:
            yield entry["file"]
        for key in ("chapters", "sections", "parts"):
            yield from _toc_files(entry.get(key, []))


def test_toc_lists_every_notebook_and_only_existing_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"], *_toc_files(toc.get("parts", toc.get("chapters", [])))]
    for name in files:
        assert any((ROOT / f"{name}{ext}").exists() for ext in (".md", ".ipynb")), name
    listed = {name for name in files if name.startswith("notebooks/")}
    assert listed == {f"notebooks/{nb.stem}" for nb in NOTEBOOKS}


def test_bibliography_has_the_paper():
    bib = (ROOT / "book" / "references.bib").read_text()
    assert "@inproceedings{ioffe2015batch" in bib


# --------------------------------------------------------------------------------------------
# Notebook conventions
# --------------------------------------------------------------------------------------------
EXERCISE = re.compile(r"```\{exercise\}[^\n]*\n:label: (ex-[a-z0-9-]+)")
SOLUTION_START = re.compile(r"```\{solution-start\} (ex-[a-z0-9-]+)\n:class: dropdown\n```")
CHECK = re.compile(r'check\("([a-z0-9-]+)", ')


def exercises_in(nb):
    """[(label, [solution code cells], check id)] in notebook order, parsed strictly."""
    found, cells, i = [], nb.cells, 0
    while i < len(cells):
        match = EXERCISE.search(cells[i].source) if cells[i].cell_type == "markdown" else None
        if not match:
            i += 1
            continue
        label = match.group(1)
        start = SOLUTION_START.fullmatch(cells[i + 1].source.strip())
        assert start and start.group(1) == label, (
            f"{label}: the next cell must open its dropdown solution"
        )
        j = i + 2
        code = []
        while not cells[j].source.startswith("```{solution-end}"):
            assert cells[j].cell_type == "code", f"{label}: only code between solution-start/end"
            code.append(cells[j])
            j += 1
        checked = CHECK.search(cells[j + 1].source)
        assert cells[j + 1].cell_type == "code" and checked, f"{label}: a check cell must follow"
        found.append((label, code, checked.group(1)))
        i = j + 2
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_structure(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    found = exercises_in(nb)
    assert len(found) >= 2, "every chapter ends with at least two exercises"
    for label, code, exercise_id in found:
        assert exercise_id in EXERCISES, f"{label}: unknown exercise id {exercise_id}"
        assert EXERCISES[exercise_id].chapter == path.stem
        assert label == f"ex-{exercise_id}", "labels are ex-<exercise id>"
        source = "\n".join(cell.source for cell in code)
        assert source.count("### BEGIN SOLUTION") == source.count("### END SOLUTION") >= 1
        function = EXERCISES[exercise_id].function
        assert EXERCISES[exercise_id].defined_in(source), (
            f"{label}: the solution must define {function}, the name in the exercise's signature"
        )


# What a cell whose output nbval may ignore must call: it prints times, which vary.
TIMERS = {"perf_counter", "timeit", "time_calls", "run"}  # time.*, timeit.*, bench.*


def calls(source: str) -> set[str]:
    """The names of the functions ``source`` calls (``bench.run(...)`` gives ``run``)."""
    called = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            function = node.func
            called.add(
                function.attr if isinstance(function, ast.Attribute) else ast.unparse(function)
            )
    return called


def unchecked_output(cell) -> str | None:
    """Why nbval would not compare ``cell``'s output with the committed one, or ``None``.
    Only a cell that times something may carry the ``nbval-ignore-output`` tag; nbval's comment
    markers (which readers would see) and its other tags (skip, raises) are refused."""
    from nbval.plugin import find_comment_markers, metadata_tags

    if list(find_comment_markers(cell.source)):
        return "nbval's markers are cell tags, which readers do not see"
    tags = set(cell.metadata.get("tags", [])) & set(metadata_tags)
    if not tags <= {"nbval-ignore-output"}:
        return f"no cell may skip its check: {sorted(tags)}"
    if tags and not calls(cell.source) & TIMERS:
        return "only timings may be tagged nbval-ignore-output"
    return None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_executed_and_deterministic(path):
    nb = nbformat.read(path, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    counts = [cell.execution_count for cell in code]
    assert counts == list(range(1, len(code) + 1)), "run top to bottom in a fresh kernel"
    for cell in code:
        for output in cell.outputs:
            assert output.output_type != "error", cell.source[:80]
            assert output.get("name") != "stderr", f"stderr output in: {cell.source[:80]}"
        assert unchecked_output(cell) is None, f"{unchecked_output(cell)}: {cell.source[:80]}"
        figures = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        if figures:
            assert cell.source.rstrip().endswith("plt.show()"), "figures end with plt.show()"


# The book's code column shows 83 characters at 1280 px (13 px monospace, book/static/
# course.css): a longer line scrolls sideways. Code is written to 79.
CODE_WIDTH = 79


def fenced_code(markdown: str) -> list[str]:
    """The lines of the fenced code blocks of a markdown cell (```` ```python ````, not a
    ```` ```{directive} ````, whose body is markdown), which the book shows in the same code
    column. A fence closes with at least as many backticks as opened it."""
    lines, fences = [], []  # fences: (backticks, is code) of the open fences, innermost last
    for line in markdown.splitlines():
        stripped = line.lstrip()
        ticks = len(stripped) - len(stripped.lstrip("`"))
        if ticks >= 3:
            info = stripped[ticks:].strip()
            if fences and not info and ticks >= fences[-1][0]:
                fences.pop()
            else:
                fences.append((ticks, not info.startswith("{")))
            continue
        if fences and fences[-1][1]:
            lines.append(line)
    return lines


def long_code_lines(nb) -> list[str]:
    """The lines longer than CODE_WIDTH in ``nb``'s code cells (the Colab install cell too:
    folded in the book, it scrolls when a reader opens it) and in its markdown's fenced code."""
    lines = [
        line
        for cell in nb.cells
        for line in (
            cell.source.splitlines() if cell.cell_type == "code" else fenced_code(cell.source)
        )
    ]
    return [line for line in lines if len(line) > CODE_WIDTH]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_fits_the_books_code_column(path):
    long = long_code_lines(nbformat.read(path, as_version=4))
    assert not long, f"{len(long)} code lines longer than {CODE_WIDTH} characters: {long[:3]}"


def test_the_code_width_check_finds_a_long_line():
    long = "print(" + "1 + " * 20 + "1)"
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A chapter " + "x" * 100),
        nbformat.v4.new_code_cell("install = 1  # " + "x" * (CODE_WIDTH - 15)),
        nbformat.v4.new_code_cell("x = 1\n" + "y = 2  # " + "z" * (CODE_WIDTH - 9)),
    ]
    assert long_code_lines(nb) == []
    nb.cells.append(nbformat.v4.new_code_cell(f"x = 1\n{long}\ny = 2"))
    assert long_code_lines(nb) == [long]
    nb.cells.append(nbformat.v4.new_markdown_cell(f"Run:\n\n```python\n{long}\n```\n"))
    assert long_code_lines(nb) == [long, long]


# What a chapter prints must fit the code column too (83 characters at 1280 px, 13 px
# monospace): stream outputs, printed values and errors; figures are not text.
OUTPUT_WIDTH = 83


def long_output_lines(nb) -> list[str]:
    """The lines longer than OUTPUT_WIDTH that ``nb``'s code cells print (streams, text/plain
    results without a figure, error tracebacks)."""
    texts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.output_type == "stream":
                texts.append(output.text)
            elif output.output_type == "error":
                texts.extend(output.traceback)
            else:
                data = output.get("data", {})
                if "text/plain" in data and not any(k.startswith("image/") for k in data):
                    texts.append(data["text/plain"])
    return [line for text in texts for line in text.splitlines() if len(line) > OUTPUT_WIDTH]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_fit_the_books_code_column(path):
    long = long_output_lines(nbformat.read(path, as_version=4))
    assert not long, f"{len(long)} output lines longer than {OUTPUT_WIDTH} characters: {long[:3]}"


def test_the_output_width_check_finds_a_long_line():
    long = "x" * (OUTPUT_WIDTH + 1)
    fits = "y" * OUTPUT_WIDTH
    cell = nbformat.v4.new_code_cell("print(x)")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=f"{fits}\n"),
        nbformat.v4.new_output(
            "display_data", data={"image/png": "iVBOR", "text/plain": "<Figure " + long + ">"}
        ),
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# A chapter " + long), cell]
    assert long_output_lines(nb) == []
    cell.outputs.append(nbformat.v4.new_output("stream", name="stdout", text=f"a\n{long}\nb\n"))
    cell.outputs.append(
        nbformat.v4.new_output("execute_result", data={"text/plain": long}, execution_count=1)
    )
    assert long_output_lines(nb) == [long, long]


def test_magnitude_prints_an_order_of_magnitude_a_cpu_cannot_change():
    from bncourse.display import magnitude

    assert magnitude(2.4e-7) == magnitude(-4.9e-7) == "below 1e-6"
    assert magnitude(3e-3) == "below 1e-2"
    assert magnitude(0.0) == magnitude(2.2e-16) == magnitude(4e-14) == "below 1e-13"
    # near a power of ten another CPU's last bits could cross: refused, not printed
    for close in (1.19e-7, 6e-7, 1e-6, 1e-13, 1.5e-13, 6e-14):
        with pytest.raises(ValueError, match="power of ten"):
            magnitude(close)
    with pytest.raises(ValueError, match="finite"):
        magnitude(float("nan"))


def test_wrapped_fits_a_long_printed_line_and_keeps_the_rest():
    from bncourse.display import WIDTH, wrapped

    module = "  (2): BatchNorm1d(64, eps=1e-05, momentum=0.1, affine=True, track_running_stats=1)"
    text = f"Sequential(\n{module}\n)"
    lines = wrapped(text).splitlines()
    assert lines[0] == "Sequential(" and lines[-1] == ")"
    assert all(len(line) <= WIDTH for line in lines) and len(lines) == 4
    assert lines[1].startswith("  (2): ") and lines[2].startswith("    ")
    assert " ".join(wrapped(text).split()) == " ".join(text.split())
    assert wrapped("short\n\nlines") == "short\n\nlines"


def test_every_exercise_is_in_exactly_one_notebook():
    seen = {}
    for path in NOTEBOOKS:
        for _, _, exercise_id in exercises_in(nbformat.read(path, as_version=4)):
            assert exercise_id not in seen, (
                f"{exercise_id} in {seen.get(exercise_id)} and {path.stem}"
            )
            seen[exercise_id] = path.stem
    assert set(seen) == set(EXERCISES)


# --------------------------------------------------------------------------------------------
# The published site: figures, launch buttons, workflows
# --------------------------------------------------------------------------------------------
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_is_numbered_with_a_caption(path):
    nb = nbformat.read(path, as_version=4)
    names = []
    for cell in nb.cells:
        if cell.cell_type == "code" and any("image/png" in o.get("data", {}) for o in cell.outputs):
            figure = cell.metadata.get("mystnb", {}).get("figure", {})
            assert figure.get("caption", "").strip(), (
                f"figure without a caption: {cell.source[:60]}"
            )
            assert figure.get("name", "").startswith("fig-"), (
                f"figure without a name: {cell.source[:60]}"
            )
            names.append(figure["name"])
    assert len(names) == len(set(names))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_install_the_course_package_on_colab(path):
    """Colab opens a notebook alone: its first code cell installs bncourse from the book's
    repository when it is missing (and does nothing where it is installed)."""
    cell = nbformat.read(path, as_version=4).cells[1]
    assert cell.cell_type == "code" and 'find_spec("bncourse") is None' in cell.source
    assert f'git+{CONFIG["repository"]["url"]}"' in cell.source, "the URL must match _config.yml"


def test_launch_buttons_and_binder_environment():
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert CONFIG["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    assert CONFIG["only_build_toc_files"] is True
    assert CONFIG["execute"]["execute_notebooks"] == "off", (
        "the book shows the committed, tested outputs"
    )
    binder = (ROOT / "binder" / "requirements.txt").read_text()
    assert "-r ../requirements.txt" in binder
    assert "pip install --no-deps -e ." in (ROOT / "binder" / "postBuild").read_text()


def check_workflows(*paths: Path) -> subprocess.CompletedProcess:
    checker = Path(sys.executable).with_name("check-jsonschema")
    return subprocess.run(
        [str(checker), "--builtin-schema", "vendor.github-workflows", *map(str, paths)],
        capture_output=True,
        text=True,
    )


def test_workflows_are_valid_github_actions():
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    assert {p.name for p in workflows} >= {"ci.yml", "publish.yml", "grade.yml"}
    result = check_workflows(*workflows)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_workflow_check_can_fail(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("name: broken\non: push\njobs:\n  test:\n    steps:\n      - run: true\n")
    assert check_workflows(broken).returncode != 0, "a job without runs-on must be rejected"


def test_workflows_run_the_readme_commands():
    ci = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    publish = yaml.safe_load((ROOT / ".github/workflows/publish.yml").read_text())
    grade = yaml.safe_load((ROOT / ".github/workflows/grade.yml").read_text())

    def runs(workflow):
        return [
            step.get("run", "")
            for job in workflow["jobs"].values()
            for step in job.get("steps", [])
        ]

    assert "python3 course.py test" in runs(ci)
    assert "python3 course.py book" in runs(publish)
    assert any(
        "actions/deploy-pages" in step.get("uses", "")
        for step in publish["jobs"]["deploy"]["steps"]
    )
    assert any("python -m bncourse grade exercises" in run for run in runs(grade))


def test_site_layout_changes_rewrite_every_page(tmp_path, monkeypatch):
    """A chapter added to the toc changes its neighbours' next/previous links, which Sphinx
    alone would not rewrite: such changes clear the saved environment and the HTML."""
    import course

    monkeypatch.setattr(course, "ROOT", tmp_path)
    (tmp_path / "_toc.yml").write_text("root: intro\n")
    (tmp_path / "_config.yml").write_text("title: a\n")
    (tmp_path / "book" / "static").mkdir(parents=True)
    (tmp_path / "book" / "static" / "course.css").write_text("a {}\n")
    build = tmp_path / "_build"
    doctrees, html = build / ".doctrees", build / "html"

    def fill() -> None:
        for cache in (doctrees, html):
            cache.mkdir(parents=True, exist_ok=True)

    course.invalidate_stale_site()
    fill()
    course.invalidate_stale_site()
    assert [doctrees.exists(), html.exists()] == [True, True], "nothing changed: the build stays"
    for path, text in [
        ("_toc.yml", "root: intro\nchapters: []\n"),
        ("_config.yml", "title: b\n"),
        ("book/static/course.css", "a { color: red }\n"),
    ]:
        (tmp_path / path).write_text(text)
        course.invalidate_stale_site()
        assert [doctrees.exists(), html.exists()] == [False, False], path
        fill()


# --------------------------------------------------------------------------------------------
# Where course.py takes PyTorch from
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "platform, gpu, reachable, setting, expected",
    [
        ("linux", False, True, None, "cpu"),  # a Linux laptop: the CPU build, no CUDA download
        (
            "linux",
            False,
            False,
            None,
            None,
        ),  # PyTorch's index unreachable (this machine kind): the default index
        ("linux", True, True, None, None),  # an NVIDIA GPU: the CUDA build from the default index
        ("darwin", False, True, None, None),  # macOS and Windows: the default index has CPU builds
        ("win32", False, True, None, None),
        ("linux", False, True, "default", None),  # the learner decides
        (
            "linux",
            True,
            True,
            "https://download.pytorch.org/whl/cu126",
            "https://download.pytorch.org/whl/cu126",
        ),
    ],
)
def test_torch_comes_from_the_cpu_index_on_linux_without_a_gpu(
    monkeypatch, capsys, platform, gpu, reachable, setting, expected
):
    import course

    monkeypatch.setattr(course.sys, "platform", platform)
    monkeypatch.setattr(course, "_has_nvidia_gpu", lambda: gpu)
    asked = []
    monkeypatch.setattr(
        course, "_reachable", lambda url, timeout=10.0: asked.append(url) or reachable
    )
    if setting is None:
        monkeypatch.delenv("BNCOURSE_TORCH_INDEX", raising=False)
    else:
        monkeypatch.setenv("BNCOURSE_TORCH_INDEX", setting)
    chosen = course.torch_index()
    assert chosen == (course.TORCH_CPU_INDEX if expected == "cpu" else expected)
    if platform == "linux" and not gpu and setting is None:
        assert asked == [f"{course.TORCH_CPU_INDEX}/torch/"]
        assert ("cannot be reached" in capsys.readouterr().out) == (not reachable)
    else:
        assert asked == [], "no network probe where the answer does not depend on it"


def test_an_unreachable_index_is_found_out_quickly():
    import time

    import course

    start = time.monotonic()
    assert course._reachable("https://127.0.0.1:9/whl/cpu/torch/", timeout=5) is False
    assert time.monotonic() - start < 6


def test_the_environment_installs_torch_first_from_the_chosen_index(tmp_path, monkeypatch):
    """With an index chosen, torch alone is installed from it, constrained to the pins (so
    its own dependencies keep the locked versions); then the lock; then bncourse."""
    import course

    commands = []
    monkeypatch.setattr(course, "_run", lambda cmd, **kw: commands.append([str(c) for c in cmd]))
    monkeypatch.setattr(course, "torch_index", lambda: "https://example.org/whl/cpu")
    monkeypatch.setattr(course, "PYTHON", tmp_path / "python")
    monkeypatch.setattr(course, "STAMP", tmp_path / ".installed")
    (tmp_path / "python").write_text("")
    course.ensure_environment()
    assert [c[4:] for c in commands] == [
        [
            "install",
            "-q",
            "--extra-index-url",
            "https://example.org/whl/cpu",
            "-c",
            str(course.REQUIREMENTS),
            "torch",
        ],
        ["install", "-q", "-r", str(course.REQUIREMENTS)],
        ["install", "-q", "--no-deps", "-e", "."],
    ]
    commands.clear()
    course.ensure_environment()
    assert commands == [], "installed already: nothing to do"


def test_check_pins_resolves_as_a_learner_would(monkeypatch):
    """No local wheels, no pip configuration, no other index: what a learner's pip sees."""
    import os

    import course

    for name, value in [
        ("PIP_FIND_LINKS", "/opt/wheels"),
        ("PIP_INDEX_URL", "https://mirror.example/simple"),
        ("PIP_CONSTRAINT", "/etc/c.txt"),
        ("PIP_CERT", "/etc/ssl/certs/ca.crt"),
    ]:
        monkeypatch.setenv(name, value)
    env = course._index_only_env()
    assert env["PIP_CONFIG_FILE"] == os.devnull and env["PIP_CERT"] == "/etc/ssl/certs/ca.crt"
    assert not {"PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_CONSTRAINT"} & set(env)
    assert course._pinned(
        "torch==2.13.0\nnumpy==2.2.6 ; python_full_version < '3.11'\n# c\n    # via x\n"
    ) == {"torch": "2.13.0", "numpy": "2.2.6"}


# --------------------------------------------------------------------------------------------
# The code is kept as pyproject.toml configures ruff
# --------------------------------------------------------------------------------------------
def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("ruff")), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def test_the_code_passes_ruffs_lint_and_format_checks():
    lint, layout = ruff("check", "."), ruff("format", "--check", ".")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert layout.returncode == 0, (
        "run `.venv/bin/ruff format .`:\n" + layout.stdout + layout.stderr
    )


def test_ruff_would_catch_a_loop_closure(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("fs = []\nfor i in range(3):\n    fs.append(lambda: i)\n")
    result = ruff("check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(bad))
    assert result.returncode != 0 and "B023" in result.stdout


def _package_layers():
    """The modules of bncourse's docstring, line by line: [{"conventions"}, {"numpy_bn"}, ...]."""
    import bncourse

    bullets = bncourse.__doc__.split("\n* ")[1:]
    return [set(re.findall(r":mod:`bncourse\.(\w+)`", bullet)) for bullet in bullets]


def _imported_modules(path):
    """The bncourse modules a file (or package folder) imports, at the top or inside functions."""
    import ast

    files = sorted(path.glob("*.py")) if path.is_dir() else [path]
    names = set()
    for file in files:
        package = "bncourse" if file.parent.name == "bncourse" else f"bncourse.{file.parent.name}"
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.rsplit(".", node.level - 1)[0] if node.level else ""
                module = ".".join(p for p in (base, node.module) if p)
                targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                if parts[0] == "bncourse" and len(parts) > 1:
                    names.add(parts[1])
    return names


def test_every_module_is_listed_and_imports_only_the_ones_listed_before_it():
    """bncourse's docstring orders its modules bottom-up; this keeps the order true."""
    package = ROOT / "bncourse"
    layers = _package_layers()
    listed = set().union(*layers)
    existing = {p.stem for p in package.glob("*.py") if not p.stem.startswith("_")}
    existing |= {p.name for p in package.iterdir() if (p / "__init__.py").exists()}
    assert existing == listed, f"unlisted: {existing - listed}, missing: {listed - existing}"
    allowed = set()
    for layer in layers:
        allowed |= layer
        for name in layer:
            path = package / name if (package / name).is_dir() else package / f"{name}.py"
            upward = _imported_modules(path) - allowed - {name}
            assert not upward, f"bncourse.{name} imports {upward}, listed after it"


def test_the_class_report_links_to_where_the_book_is_published():
    """publish.yml deploys to GitHub Pages, whose address follows from the repository's."""
    from bncourse.grading.classroom import BOOK_URL

    repository = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    owner, name = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+)", repository).groups()
    assert BOOK_URL == f"https://{owner}.github.io/{name}"


# --------------------------------------------------------------------------------------------
# course.py's command line
# --------------------------------------------------------------------------------------------
def course_py(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python3 course.py ARGUMENTS`` run from ``cwd`` with an environment that cannot
    install anything (no .venv is found or made: VIRTUAL_ENV is irrelevant, pip is never
    reached when the command answers first)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "course.py"), *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "arguments, status, says",
    [
        (["--help"], 0, "The course's entry points"),
        (["-h"], 0, "The course's entry points"),
        (["test", "--help"], 0, "extra arguments go to pytest"),
        (["book", "-h"], 0, "jupyter-book build"),
        (["frobnicate"], 2, "error: unknown command 'frobnicate'; the commands are book, pdf"),
        ([], 2, "python3 course.py book"),
    ],
)
def test_course_py_answers_help_and_mistakes_before_installing(tmp_path, arguments, status, says):
    import course

    before = course.STAMP.stat().st_mtime_ns if course.STAMP.exists() else None
    result = course_py(*arguments, cwd=tmp_path)
    assert result.returncode == status, result.stderr
    assert says in result.stdout + result.stderr
    assert "+ " not in result.stdout, "nothing was run or installed"
    assert (course.STAMP.stat().st_mtime_ns if course.STAMP.exists() else None) == before


def test_course_py_test_runs_pytest_from_the_callers_folder_with_this_configuration():
    import course

    tests = ROOT / "tests"
    anchor = ["--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml")]
    everything = [str(ROOT / path) for path in course.TESTPATHS]
    assert course.pytest_invocation(ROOT, ["-k", "x"]) == (ROOT, ["-k", "x"])  # pytest's own way
    assert course.pytest_invocation(tests, ["test_project.py", "--ignore", "exercises"]) == (
        tests,
        [*anchor, "test_project.py", "--ignore", "exercises"],  # pytest resolves them from tests/
    )
    for no_path in (["-k", "tests"], ["-qk", "tests"], ["--durations", "5"], []):
        assert course.pytest_invocation(tests, no_path) == (tests, [*anchor, *everything, *no_path])
    testpaths = re.search(r"^testpaths = (.*)$", (ROOT / "pyproject.toml").read_text(), re.M)
    assert list(course.TESTPATHS) == yaml.safe_load(testpaths.group(1))


# --------------------------------------------------------------------------------------------
# The suite's scheduling: a group runs on one worker
# --------------------------------------------------------------------------------------------
GROUPED = """
import os, pytest
pytestmark = pytest.mark.xdist_group("built-once")

@pytest.fixture(scope="module")
def built():
    with open("builds.txt", "a") as log:
        log.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")

@pytest.mark.parametrize("i", range(6))
def test_grouped(built, i):
    pass
"""


def test_an_xdist_group_runs_on_one_worker(tmp_path):
    """One notebook's cells share one kernel, and the book and the PDF are built once, only
    if ``--dist loadgroup`` keeps a group on one worker (it did not with pytest 9, whose
    items ignore the node id xdist 3.8 rewrites: requirements.in)."""
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    (tmp_path / "test_other.py").write_text(
        "import pytest\n@pytest.mark.parametrize('i', range(6))\ndef test_other(i):\n    pass\n"
    )
    run = subprocess.run(  # xdist alone: the other plugins' imports would take most of the time
        [sys.executable, "-m", "pytest", "-q", "-p", "xdist", "-n", "2", "--dist", "loadgroup"]
        + ["-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1"),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert len((tmp_path / "builds.txt").read_text().split()) == 1, "the fixture built twice"


@pytest.mark.parametrize(
    "source, tags, why",
    [
        ("# PYTEST_VALIDATE_IGNORE_OUTPUT\nprint(1.0171)", [], "nbval's old comment marker"),
        ("# NBVAL_SKIP\nprint(1.0171)", [], "a comment marker"),
        ("print(1.0171)", ["nbval-skip"], "a tag that skips the cell"),
        ("print(1.0171)", ["nbval-ignore-output", "nbval-skip"], "a skip beside the timing tag"),
        ("# perf_counter\nprint(1.0171)", ["nbval-ignore-output"], "a timer named, not called"),
    ],
)
def test_the_marker_rule_refuses_what_would_hide_a_number(source, tags, why):
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = tags
    assert unchecked_output(cell), why
    timing = nbformat.v4.new_code_cell("start = time.perf_counter()\nprint(seconds)")
    timing.metadata["tags"] = ["nbval-ignore-output"]
    assert unchecked_output(timing) is None


# --------------------------------------------------------------------------------------------
# The grader skips the long demonstrations (cells tagged grader-skip, bncourse/grading/kernel.py)
# --------------------------------------------------------------------------------------------
def bound_and_free(source: str) -> tuple[set[str], set[str]]:
    """The names a cell binds (assignments, loops, imports, definitions, at any depth: more
    than it binds at the top, which only makes the check stricter) and the names it reads
    without binding them itself."""
    from IPython.core.inputtransformer2 import TransformerManager  # (%pip, !commands)

    bound, read = set(), set()
    for node in ast.walk(ast.parse(TransformerManager().transform_cell(source))):
        if isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, (ast.Store, ast.Del)) else read).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return bound, read - bound


def grader_skip_problems(nb) -> list[str]:
    """Why skipping ``nb``'s cells tagged grader-skip could change what another cell does:
    an untagged cell reading a name that a tagged cell before it binds, or a tagged cell
    that is an exercise's (its solution, its check). Empty when skipping is safe."""
    from bncourse.grading.kernel import skipped_cells

    tagged, problems, bound_by_skipped = skipped_cells(nb), [], set()
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        bound, free = bound_and_free(cell.source)
        first = cell.source.splitlines()[0] if cell.source else ""
        if index in tagged:
            if "BEGIN SOLUTION" in cell.source or cell.source.startswith("check("):
                problems.append(f"cell {index} is an exercise's: {first}")
            bound_by_skipped |= bound
        elif free & bound_by_skipped:
            problems.append(f"cell {index} reads {sorted(free & bound_by_skipped)}: {first}")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_cells_the_grader_skips_are_needed_by_no_other(path):
    assert grader_skip_problems(nbformat.read(path, as_version=4)) == []


def test_the_grader_skip_check_finds_a_needed_cell():
    def cell(source: str, tagged: bool = False):
        new = nbformat.v4.new_code_cell(source)
        new.metadata["tags"] = ["grader-skip"] if tagged else []
        return new

    nb = nbformat.v4.new_notebook()
    nb.cells = [cell("import torch"), cell("model = train()", True), cell("print(torch.pi)")]
    assert grader_skip_problems(nb) == []
    nb.cells.append(cell("print(model)"))
    assert grader_skip_problems(nb) == ["cell 3 reads ['model']: print(model)"]
    nb.cells[-1] = cell("model = 2\nprint(model)")  # binds it first: no dependence
    assert grader_skip_problems(nb) == []
    nb.cells.append(cell('check("standardize", standardize)', True))
    assert grader_skip_problems(nb) == [
        'cell 4 is an exercise\'s: check("standardize", standardize)'
    ]


def prediction_checks_showing_their_answer(nb) -> list[str]:
    """The check cells of ``nb``'s prediction exercises whose output the book would show: a
    passing check names the answer ("you predicted 6: the grid (6,) ..."), which a reader must
    not see before predicting, so these cells carry the tag ``remove-output`` (the output
    stays in the notebook, where nbval still compares it)."""
    predictions = {ex.id for ex in EXERCISES.values() if ex.prediction}
    return [
        cell.source
        for cell in nb.cells
        if cell.cell_type == "code"
        and cell.source.startswith("check(")
        and cell.source.split('"')[1] in predictions
        and "remove-output" not in cell.metadata.get("tags", [])
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_prediction_check_does_not_show_the_answer_in_the_book(path):
    assert prediction_checks_showing_their_answer(nbformat.read(path, as_version=4)) == []


def test_the_answer_check_finds_a_shown_answer():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('check("predict-output-sum", predicted_sum)')]
    assert prediction_checks_showing_their_answer(nb) == [nb.cells[0].source]
    nb.cells[0].metadata["tags"] = ["remove-output"]
    assert prediction_checks_showing_their_answer(nb) == []
