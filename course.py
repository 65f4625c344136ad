#!/usr/bin/env python3
"""The course's two entry points: build the book, run the tests.

    python3 course.py book    # creates .venv if needed, installs requirements.txt, builds _build/html
    python3 course.py test    # same environment, then runs the whole test suite (pytest)

Everything lives in a local virtual environment, ``.venv`` next to this file, so nothing is
installed into the Python you call this with (only the standard library is needed to start).
The environment is (re)installed whenever ``requirements.txt`` or ``pyproject.toml`` change:
their hash is stored in ``.venv/.installed``. Extra arguments after ``test`` go to pytest,
extra arguments after ``book`` go to ``jupyter-book build``.

The test suite includes browser tests of the built book, which need a Chromium-based
browser. ``test`` looks for one (:data:`BROWSERS`) and, if there is none, installs Debian's
``chromium`` with apt-get when it can (as root, or with password-less sudo). Where it cannot,
the browser tests are skipped and say why.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from bncourse.reproducible import reproducible_env  # noqa: E402  (standard library only)

VENV = ROOT / ".venv"
STAMP = VENV / ".installed"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")

# The strict build of the book: every warning is an error (-W), every broken reference is a
# warning (-n), and all problems are reported before failing (--keep-going).
BOOK_BUILD = ["build", str(ROOT), "-W", "-n", "--keep-going"]


# Browsers the browser tests can drive through Playwright, first found wins (Debian's
# chromium, Ubuntu's chromium-browser, Google Chrome as on GitHub's runners).
BROWSERS = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]


def find_browser() -> str | None:
    """Path of the first browser of :data:`BROWSERS` on the PATH, or ``None``."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def ensure_browser() -> None:
    """Install Debian's chromium for the browser tests if no browser is there and we may.

    An install that is attempted and fails is an error (it would otherwise silently turn the
    browser tests into skips); not being allowed to install is only a note.
    """
    if find_browser():
        return
    if os.name != "posix" or not shutil.which("apt-get"):
        print("note: no Chromium and no apt-get: the browser tests will be skipped", flush=True)
        return
    if os.geteuid() == 0:
        sudo: list[str] = []
    elif shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        sudo = ["sudo", "-n"]
    else:
        print("note: no Chromium, and installing it needs root: the browser tests will be "
              "skipped (install the 'chromium' package to run them)", flush=True)
        return
    print("Installing Debian's chromium for the browser tests", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(sudo + ["apt-get", "update", "-qq"], env=env)
    # (a font too: a minimal system may have none, and the screenshots would show boxes)
    _run(sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                 "chromium", "fonts-dejavu-core"], env=env)


def _requirements_hash() -> str:
    digest = hashlib.sha256()
    for name in ("requirements.txt", "pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def _run(cmd: list[str | os.PathLike[str]], **kwargs) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, **kwargs)


def ensure_environment() -> None:
    """Create ``.venv`` and install the pinned requirements plus ``bncourse`` (editable)."""
    if not PYTHON.exists():
        print(f"Creating a virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = _requirements_hash()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    pip = [PYTHON, "-m", "pip", "--disable-pip-version-check"]
    _run(pip + ["install", "-q", "-r", "requirements.txt"])
    _run(pip + ["install", "-q", "--no-deps", "-e", "."])
    STAMP.write_text(wanted)


def _digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _clear_when_changed(stamp: Path, inputs: list[Path], caches: list[Path], why: str) -> None:
    """Remove ``caches`` when the content of ``inputs`` differs from what ``stamp`` records."""
    wanted = _digest(inputs)
    if stamp.exists() and stamp.read_text() == wanted:
        return
    if any(cache.exists() for cache in caches):
        print(f"{why}: clearing {', '.join(c.relative_to(ROOT).as_posix() for c in caches)}")
        for cache in caches:
            shutil.rmtree(cache, ignore_errors=True)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(wanted)


def invalidate_stale_execution_cache() -> None:
    """Drop what a build saved when it no longer matches what the book is built from.

    * Jupyter Book re-executes a notebook when its code cells change, but not when
      ``bncourse/`` or the pinned requirements do; this makes those changes count too. Sphinx's
      saved environment (``_build/.doctrees``) goes as well: otherwise Sphinx sees unchanged
      notebooks, never reads them again, and the pages keep their old outputs.
    * Sphinx rewrites only the pages whose source changed, so a chapter added to ``_toc.yml``
      would leave its neighbours' next/previous links pointing past it, and an edited
      ``_config.yml`` or ``book/static``, ``book/_ext``, ``book/site_root`` would not reach
      unchanged pages: those
      changes clear the saved environment and the HTML (not the execution cache).
    """
    build = ROOT / "_build"
    _clear_when_changed(
        build / ".jupyter_cache.inputs",
        [ROOT / "requirements.txt", *(ROOT / "bncourse").rglob("*.py")],
        [build / ".jupyter_cache", build / ".doctrees"],
        "bncourse/ or requirements.txt changed",
    )
    site = [ROOT / "_toc.yml", ROOT / "_config.yml"]
    for folder in ("book/static", "book/_ext", "book/site_root"):
        site += [p for p in (ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    _clear_when_changed(
        build / ".site.inputs",
        [p for p in site if p.exists()],
        [build / ".doctrees", build / "html"],
        "the table of contents, _config.yml or the site's assets changed",
    )


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"book", "test"}:
        print(__doc__)
        return 2
    command, extra = argv[0], argv[1:]
    ensure_environment()
    env = reproducible_env()  # the same CPU code paths on every machine: see bncourse/reproducible.py
    try:
        if command == "book":
            invalidate_stale_execution_cache()
            _run([BIN / "jupyter-book", *BOOK_BUILD, *extra], env=env)
            print(f"\nThe book is at {ROOT / '_build' / 'html' / 'index.html'}")
        else:
            ensure_browser()
            _run([PYTHON, "-m", "pytest", *extra], env=env)
    except subprocess.CalledProcessError as error:
        return error.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
