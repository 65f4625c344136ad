"""The project's conventions, checked: quick start, CI, pins, table of contents, notebooks.

These tests keep the promises of README.md and COURSE.md true as chapters are added: every
notebook is in the book, is committed executed, ends with exercises in the agreed format
(exercise block, dropdown solution with BEGIN/END SOLUTION markers, check cell), and every
exercise id it checks is registered in bncourse.checks.
"""
from __future__ import annotations

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
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]
    assert commands == ["python3 course.py book", "python3 course.py test"]
    first_block = re.search(r"```\w*\n(.*?)```", readme, re.S).group(1)
    assert first_block == block, "the quick start must be the README's first code block"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "rm -rf .venv" in ci, ".ci/run must start from a fresh virtual environment"
    assert commands[1] in ci


def test_requirements_are_exact_pins():
    # An environment marker may follow a pin (triton: Linux wheels only).
    lines = [line.split("#")[0].split(";")[0].strip()
             for line in (ROOT / "requirements.txt").read_text().splitlines()]
    pins = [line for line in lines if line]
    assert pins, "requirements.txt is empty"
    for pin in pins:
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][A-Za-z0-9_.\-]*", pin), f"not an exact pin: {pin}"
    names = {pin.split("==")[0].lower(): pin.split("==")[1] for pin in pins}
    assert names["torch"] == "2.13.0"
    assert names["jupyter-book"].startswith("1.")
    assert names["triton"] == "3.6.0"  # what chapter 8's kernels are written and tested for
    for needed in ["numpy", "matplotlib", "pytest", "nbval", "hypothesis", "sphinx-exercise",
                   "sphinx-proof", "sphinxcontrib-bibtex", "ipykernel"]:
        assert needed in names, f"{needed} is not pinned"


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
        assert start and start.group(1) == label, f"{label}: the next cell must open its dropdown solution"
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
        assert f"def {function}(" in source or f"class {function}" in source, (
            f"{label}: the solution must define {function}, the name in the exercise's signature")


# What a cell whose output nbval may ignore must call: it prints times, which vary.
TIMERS = ("perf_counter", "timeit", "bench.time_calls", "bench.run(")


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
        if "NBVAL_IGNORE_OUTPUT" in cell.source:
            assert any(timer in cell.source for timer in TIMERS), (
                "NBVAL_IGNORE_OUTPUT is only for timings: " + cell.source[:80])
        figures = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        if figures:
            assert cell.source.rstrip().endswith("plt.show()"), "figures end with plt.show()"


def test_every_exercise_is_in_exactly_one_notebook():
    seen = {}
    for path in NOTEBOOKS:
        for _, _, exercise_id in exercises_in(nbformat.read(path, as_version=4)):
            assert exercise_id not in seen, f"{exercise_id} in {seen.get(exercise_id)} and {path.stem}"
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
            assert figure.get("caption", "").strip(), f"figure without a caption: {cell.source[:60]}"
            assert figure.get("name", "").startswith("fig-"), f"figure without a name: {cell.source[:60]}"
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
    assert CONFIG["execute"]["timeout"] > 0
    binder = (ROOT / "binder" / "requirements.txt").read_text()
    assert "-r ../requirements.txt" in binder
    assert "pip install --no-deps -e ." in (ROOT / "binder" / "postBuild").read_text()


def check_workflows(*paths: Path) -> subprocess.CompletedProcess:
    checker = Path(sys.executable).with_name("check-jsonschema")
    return subprocess.run([str(checker), "--builtin-schema", "vendor.github-workflows", *map(str, paths)],
                          capture_output=True, text=True)


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
        return [step.get("run", "") for job in workflow["jobs"].values() for step in job.get("steps", [])]

    assert "python3 course.py test" in runs(ci)
    assert "python3 course.py book" in runs(publish)
    assert any("actions/deploy-pages" in step.get("uses", "") for step in publish["jobs"]["deploy"]["steps"])
    assert any("python -m bncourse grade exercises" in run for run in runs(grade))


def test_execution_cache_is_cleared_when_the_package_or_pins_change(tmp_path, monkeypatch):
    """Jupyter Book re-executes a notebook when its code changes; course.py also makes a
    change to bncourse/ or requirements.txt count, so the book never shows stale outputs."""
    import course

    monkeypatch.setattr(course, "ROOT", tmp_path)
    (tmp_path / "bncourse").mkdir()
    (tmp_path / "bncourse" / "numpy_bn.py").write_text("x = 1\n")
    (tmp_path / "requirements.txt").write_text("numpy==2.4.6\n")
    # Jupyter Book's execution cache, and Sphinx's saved environment, which would otherwise
    # tell Sphinx the notebooks are unchanged so that it never reads (executes) them again
    caches = [tmp_path / "_build" / ".jupyter_cache", tmp_path / "_build" / ".doctrees"]

    def fill() -> None:
        for cache in caches:
            cache.mkdir(parents=True, exist_ok=True)

    def cached() -> list[bool]:
        return [cache.exists() for cache in caches]

    fill()
    course.invalidate_stale_execution_cache()  # first run: nothing recorded, start clean
    assert cached() == [False, False]
    fill()
    course.invalidate_stale_execution_cache()
    assert cached() == [True, True], "nothing changed: the caches stay"
    (tmp_path / "bncourse" / "numpy_bn.py").write_text("x = 2\n")
    course.invalidate_stale_execution_cache()
    assert cached() == [False, False], "bncourse changed: the caches go"
    fill()
    (tmp_path / "requirements.txt").write_text("numpy==2.4.7\n")
    course.invalidate_stale_execution_cache()
    assert cached() == [False, False], "the pins changed: the caches go"


def test_site_layout_changes_rewrite_every_page(tmp_path, monkeypatch):
    """A chapter added to the toc changes its neighbours' next/previous links, which Sphinx
    alone would not rewrite: such changes clear the saved environment and the HTML, while the
    notebooks' execution cache stays (their outputs did not change)."""
    import course

    monkeypatch.setattr(course, "ROOT", tmp_path)
    (tmp_path / "bncourse").mkdir()
    (tmp_path / "requirements.txt").write_text("numpy==2.4.6\n")
    (tmp_path / "_toc.yml").write_text("root: intro\n")
    (tmp_path / "_config.yml").write_text("title: a\n")
    (tmp_path / "book" / "static").mkdir(parents=True)
    (tmp_path / "book" / "static" / "course.css").write_text("a {}\n")
    build = tmp_path / "_build"
    execution, doctrees, html = build / ".jupyter_cache", build / ".doctrees", build / "html"

    def fill() -> None:
        for cache in (execution, doctrees, html):
            cache.mkdir(parents=True, exist_ok=True)

    course.invalidate_stale_execution_cache()
    fill()
    course.invalidate_stale_execution_cache()
    assert [execution.exists(), doctrees.exists(), html.exists()] == [True, True, True]
    for path, text in [("_toc.yml", "root: intro\nchapters: []\n"), ("_config.yml", "title: b\n"),
                       ("book/static/course.css", "a { color: red }\n")]:
        (tmp_path / path).write_text(text)
        course.invalidate_stale_execution_cache()
        assert [execution.exists(), doctrees.exists(), html.exists()] == [True, False, False], path
        fill()
