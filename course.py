#!/usr/bin/env python3
"""The course's entry points: build the book, run the tests.

    python3 course.py book    # creates .venv if needed, installs requirements.txt, builds the book
    python3 course.py test    # same environment, then runs the whole test suite (pytest)
    python3 course.py pdf     # the whole book as one PDF: _build/latex/book.pdf

and three for contributors (CONTRIBUTING.md):

    python3 course.py test --fast   # the suite without the slow tests (notebooks, book, browser)
    python3 course.py lock          # regenerate requirements.txt from requirements.in
    python3 course.py check-pins    # resolve requirements.txt for every Python and platform

Everything lives in a local virtual environment, ``.venv`` next to this file, so nothing is
installed into the Python you call this with (only the standard library is needed to start;
Python 3.10 to 3.13 are supported). The environment is (re)installed whenever
``requirements.txt`` or ``pyproject.toml`` change: their hash is stored in ``.venv/.installed``.
Extra arguments after ``test`` go to pytest, extra arguments after ``book`` go to
``jupyter-book build``.

PyTorch: on Linux, the package index's ``torch`` is the CUDA build, several GB of GPU
libraries that a CPU course does not need. On a Linux machine without an NVIDIA GPU, ``book``
and ``test`` therefore take torch from PyTorch's CPU index (:data:`TORCH_CPU_INDEX`) when it
can be reached, and from the default index otherwise. ``BNCOURSE_TORCH_INDEX`` overrides the
choice: another index URL (say PyTorch's ``.../whl/cu126``), or ``default`` for the default
index only.

The test suite includes browser tests of the built book, which need a Chromium-based
browser. ``test`` looks for one (:data:`BROWSERS`) and, if there is none, installs Debian's
``chromium`` with apt-get when it can (as root, or with password-less sudo). Where it cannot,
the browser tests are skipped and say why.

The PDF (``pdf``, Jupyter Book's LaTeX builder with XeLaTeX) needs a TeX distribution, and
its test (tests/test_pdf.py) poppler's ``pdftotext``. Where ``xelatex`` or ``latexmk`` is
missing, ``pdf`` and ``test`` install Debian's packages (:data:`TEX_PACKAGES`) the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import venv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from bncourse.reproducible import reproducible_env  # noqa: E402  (standard library only)

VENV = ROOT / ".venv"
STAMP = VENV / ".installed"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
REQUIREMENTS = ROOT / "requirements.txt"

# The Pythons the course supports (requires-python in pyproject.toml, the lock's range).
OLDEST_PYTHON, NEWEST_PYTHON = (3, 10), (3, 13)

# The strict build of the book: every warning is an error (-W), every broken reference is a
# warning (-n), and all problems are reported before failing (--keep-going).
BOOK_BUILD = ["build", str(ROOT), "-W", "-n", "--keep-going"]

# The slow tests (executing the chapters, building the book, the browser): `test --fast` skips them.
FAST = ["-m", "not slow"]


# --------------------------------------------------------------------------------------------
# The environment
# --------------------------------------------------------------------------------------------
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _run(cmd: list[str | os.PathLike[str]], cwd: Path = ROOT, **kwargs) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=cwd, **kwargs)


def _has_nvidia_gpu() -> bool:
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def _reachable(url: str, timeout: float = 10.0) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def torch_index() -> str | None:
    """The extra package index to install torch from, or ``None`` for the default index.

    ``BNCOURSE_TORCH_INDEX`` decides when it is set (a URL, or ``default``). Otherwise: PyTorch's
    CPU index on Linux without an NVIDIA GPU, if it answers; ``None`` elsewhere (macOS and
    Windows get a CPU build from the default index anyway, a GPU machine wants the CUDA build).
    """
    chosen = os.environ.get("BNCOURSE_TORCH_INDEX", "").strip()
    if chosen:
        return None if chosen == "default" else chosen
    if not sys.platform.startswith("linux") or _has_nvidia_gpu():
        return None
    if _reachable(f"{TORCH_CPU_INDEX}/torch/"):
        return TORCH_CPU_INDEX
    print(
        f"note: {TORCH_CPU_INDEX} cannot be reached, so pip takes torch from the indexes it "
        "is configured with (the package index's Linux torch is the CUDA build, several GB)",
        flush=True,
    )
    return None


def _requirements_hash() -> str:
    digest = hashlib.sha256()
    for name in ("requirements.txt", "pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def _check_python() -> None:
    supported = f"Python {'.'.join(map(str, OLDEST_PYTHON))} to {'.'.join(map(str, NEWEST_PYTHON))}"
    this = f"{platform.python_version()} ({sys.executable})"
    if sys.version_info[:2] < OLDEST_PYTHON:
        raise SystemExit(
            f"error: the course needs {supported}; this is {this}. "
            "Run course.py with a newer python3."
        )
    if sys.version_info[:2] > NEWEST_PYTHON:
        print(
            f"note: the course is tested with {supported}; this is {this}, so trying anyway",
            flush=True,
        )


def ensure_environment() -> None:
    """Create ``.venv`` and install the pinned requirements plus ``bncourse`` (editable)."""
    _check_python()
    if not PYTHON.exists():
        print(f"Creating a virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = _requirements_hash()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    pip = [PYTHON, "-m", "pip", "--disable-pip-version-check"]
    index = torch_index()
    if index:  # torch alone from that index (its dependencies at the versions pinned)
        _run(pip + ["install", "-q", "--extra-index-url", index, "-c", REQUIREMENTS, "torch"])
    _run(pip + ["install", "-q", "-r", REQUIREMENTS])
    _run(pip + ["install", "-q", "--no-deps", "-e", "."])
    STAMP.write_text(wanted)


# --------------------------------------------------------------------------------------------
# The book
# --------------------------------------------------------------------------------------------
def _digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def invalidate_stale_site() -> None:
    """Drop what an earlier build saved when the site's layout changed since.

    Sphinx rewrites only the pages whose source changed, so a chapter added to ``_toc.yml``
    would leave its neighbours' next/previous links pointing past it, and an edited
    ``_config.yml`` or ``book/static``, ``book/_ext``, ``book/site_root`` would not reach
    unchanged pages: those changes clear Sphinx's saved environment and the HTML.
    """
    build = ROOT / "_build"
    stamp, caches = build / ".site.inputs", [build / ".doctrees", build / "html"]
    inputs = [ROOT / "_toc.yml", ROOT / "_config.yml"]
    for folder in ("book/static", "book/_ext", "book/site_root"):
        inputs += [
            p for p in (ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts
        ]
    wanted = _digest([p for p in inputs if p.exists()])
    if stamp.exists() and stamp.read_text() == wanted:
        return
    if any(cache.exists() for cache in caches):
        print(
            "the table of contents, _config.yml or the site's assets changed: clearing "
            + ", ".join(c.relative_to(ROOT).as_posix() for c in caches)
        )
        for cache in caches:
            shutil.rmtree(cache, ignore_errors=True)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(wanted)


# --------------------------------------------------------------------------------------------
# The browser for the browser tests
# --------------------------------------------------------------------------------------------
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


def _apt_install(packages: list[str], why: str) -> bool:
    """Install Debian ``packages`` with apt-get where we may (as root, or password-less sudo).
    Returns whether they were installed; not being allowed to is only a note."""
    if os.name != "posix" or not shutil.which("apt-get"):
        print(f"note: no apt-get to install {why}", flush=True)
        return False
    if os.geteuid() == 0:
        sudo: list[str] = []
    elif (
        shutil.which("sudo")
        and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0
    ):
        sudo = ["sudo", "-n"]
    else:
        print(f"note: installing {why} needs root ({' '.join(packages)})", flush=True)
        return False
    print(f"Installing Debian's packages for {why}", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(sudo + ["apt-get", "update", "-qq"], env=env)
    _run(sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], env=env)
    return True


def ensure_browser() -> None:
    """Install Debian's chromium for the browser tests if no browser is there and we may.

    An install that is attempted and fails is an error (it would otherwise silently turn the
    browser tests into skips); not being allowed to install is only a note.
    """
    if find_browser():
        return
    # (a font too: a minimal system may have none, and the screenshots would show boxes)
    if not _apt_install(["chromium", "fonts-dejavu-core"], "the browser tests (Chromium)"):
        print("note: no Chromium: the browser tests will be skipped", flush=True)


def ensure_sandbox() -> None:
    """Install Debian's bubblewrap, the sandbox the grader runs learner code in, if ``bwrap``
    is not there and we may. Without it the grader's sandbox tests are skipped (with the
    reason) and a grade is only a self-check that says it is not tamper-proof (README,
    "What decides a grade")."""
    if os.name != "posix" or shutil.which("bwrap"):
        return
    if not _apt_install(["bubblewrap"], "the grader's sandbox (bubblewrap)"):
        print("note: no bubblewrap: the grader's sandbox tests will be skipped", flush=True)


# --------------------------------------------------------------------------------------------
# TeX for the PDF of the book
# --------------------------------------------------------------------------------------------
# Debian's packages the PDF needs (about 700 MB installed): XeLaTeX, latexmk, the LaTeX packages
# Sphinx's and Jupyter Book's LaTeX use, the fonts (FreeSerif and friends: Greek and math
# symbols in the prose and the outputs), and poppler's pdftotext / pdftoppm for tests/test_pdf.py.
TEX_PACKAGES = [
    "texlive-xetex",
    "texlive-latex-recommended",
    "texlive-latex-extra",
    "texlive-fonts-recommended",
    "latexmk",
    "fonts-freefont-otf",
    "tex-gyre",
    "xindy",
    "poppler-utils",
]
TEX_PROGRAMS = ["xelatex", "latexmk", "pdftotext"]


def ensure_tex() -> bool:
    """Make sure XeLaTeX, latexmk and pdftotext are on the PATH, installing
    :data:`TEX_PACKAGES` where they are not and we may. Returns whether they are there."""
    if all(shutil.which(program) for program in TEX_PROGRAMS):
        return True
    _apt_install(TEX_PACKAGES, "the PDF of the book (TeX)")
    return all(shutil.which(program) for program in TEX_PROGRAMS)


PDF_BUILD = ["build", str(ROOT), "--builder", "pdflatex"]
PDF = ROOT / "_build" / "latex" / "book.pdf"


# --------------------------------------------------------------------------------------------
# The pins: one lock for every Python and platform (contributors)
# --------------------------------------------------------------------------------------------
# Packages that only PyTorch's CUDA build needs (Linux, from the default index). torch pins
# them itself; requirements.txt leaves them out so that the CPU build installs none of them.
CUDA_ONLY = re.compile(r"(nvidia|cuda)-[a-z0-9-]+")


def _pinned(text: str) -> dict[str, str]:
    """{name: version} of the ``name==version`` lines of a requirements file."""
    pins = {}
    for line in text.splitlines():
        match = re.match(r"([A-Za-z0-9_.\-]+)==([^ ;#]+)", line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


def lock() -> int:
    """Regenerate requirements.txt with uv's universal resolution (every platform, Python
    3.10 and newer, environment markers where versions differ), keeping the current pins
    where they still fit. PyTorch's CUDA libraries are left out (:data:`CUDA_ONLY`)."""
    uv = BIN / "uv"
    if not uv.exists():  # a new requirements.in may name it before requirements.txt does
        _run([PYTHON, "-m", "pip", "install", "-q", "uv"])
    minimum = ".".join(map(str, OLDEST_PYTHON))
    with tempfile.TemporaryDirectory() as tmp:
        draft = Path(tmp) / "requirements.txt"
        shutil.copy(REQUIREMENTS, draft)  # uv prefers the versions already in its output file
        base = [
            uv,
            "pip",
            "compile",
            "--quiet",
            "--universal",
            "--python-version",
            minimum,
            "--custom-compile-command",
            "python3 course.py lock",
            "requirements.in",
        ]
        _run(base + ["-o", draft])
        cuda = sorted(name for name in _pinned(draft.read_text()) if CUDA_ONLY.fullmatch(name))
        excluded = [arg for name in cuda for arg in ("--no-emit-package", name)]
        shutil.copy(draft, REQUIREMENTS)
        _run(base + excluded + ["-o", REQUIREMENTS])
    print(f"wrote {REQUIREMENTS.name}; left out for torch to pin: {', '.join(cuda)}")
    return 0


# The platforms check-pins resolves the lock for with uv (besides this machine's Pythons with
# pip). PyTorch 2.13 publishes no wheels for Intel Macs, and its Mac wheels need macOS 14.
PLATFORMS = [
    "x86_64-manylinux_2_28",
    "aarch64-manylinux_2_28",
    "aarch64-apple-darwin",
    "x86_64-pc-windows-msvc",
]


def _index_only_env() -> dict[str, str]:
    """pip as on a learner's machine: the default index alone, no local wheels, no config."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PIP_") or k in ("PIP_CERT", "PIP_DEFAULT_TIMEOUT")
    }
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def local_pythons() -> list[Path]:
    """The Python interpreters on this machine: pyenv's, the system's, the one running this."""
    found = [Path(sys.executable), Path("/usr/bin/python3")]
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
        found += sorted(Path(root, "versions").glob("*/bin/python3"))
    return [path for path in found if path.exists()]


def _version_of(python: Path) -> str:
    out = subprocess.run(
        [str(python), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def resolve_with_pip(python: Path) -> tuple[bool, str]:
    """Resolve requirements.txt with ``python``'s own pip in a fresh venv, from the default
    index alone (``pip install --dry-run``, which downloads no large wheel)."""
    with tempfile.TemporaryDirectory() as tmp:
        env_dir, report = Path(tmp) / "venv", Path(tmp) / "report.json"
        made = subprocess.run(
            [str(python), "-m", "venv", str(env_dir)], capture_output=True, text=True
        )
        if made.returncode:
            return False, f"cannot create a venv: {made.stderr.strip()[-300:]}"
        venv_python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
        result = subprocess.run(
            [
                str(venv_python),
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--ignore-installed",
                "--quiet",
                "--report",
                str(report),
                "-r",
                str(REQUIREMENTS),
            ],
            capture_output=True,
            text=True,
            env=_index_only_env(),
            timeout=1800,
        )
        if result.returncode:
            errors = [
                line for line in result.stderr.splitlines() if "ERROR" in line or "requires" in line
            ]
            return False, "; ".join(errors)[-600:] or result.stderr[-600:]
        installs = {
            item["metadata"]["name"].lower(): item["metadata"]
            for item in json.loads(report.read_text())["install"]
        }
    torch = installs["torch"]
    wanted = _pinned(REQUIREMENTS.read_text())
    if torch["version"].split("+")[0] != wanted["torch"]:
        return False, f"torch {torch['version']} instead of {wanted['torch']}"
    triton = installs.get("triton", {}).get("version")
    required = [r for r in torch.get("requires_dist", []) if r.startswith("triton")]
    cuda = [name for name in installs if CUDA_ONLY.fullmatch(name)]
    return True, (
        f"{len(installs)} packages; torch {torch['version']}, triton {triton or '(none)'}"
        + (f" (torch requires {required[0].split(';')[0]})" if required else "")
        + (f", {len(cuda)} CUDA packages that torch pins" if cuda else "")
    )


def resolve_with_uv(platform_name: str, python: str) -> tuple[bool, str]:
    """Resolve requirements.txt with uv for another platform: every package must be pinned
    there already (only torch's CUDA libraries may be added) and have a wheel."""
    env = dict(os.environ, MACOSX_DEPLOYMENT_TARGET="14.0")  # torch 2.13's oldest macOS
    result = subprocess.run(
        [
            str(BIN / "uv"),
            "pip",
            "compile",
            "--quiet",
            "--no-header",
            "--no-annotate",
            "--only-binary",
            ":all:",
            "--python-platform",
            platform_name,
            "--python-version",
            python,
            str(REQUIREMENTS),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if result.returncode:
        return False, result.stderr.strip()[-600:]
    resolved, pinned = _pinned(result.stdout), _pinned(REQUIREMENTS.read_text())
    missing = sorted(name for name in set(resolved) - set(pinned) if not CUDA_ONLY.fullmatch(name))
    if missing:
        return False, f"not pinned in requirements.txt: {', '.join(missing)}"
    return (
        True,
        f"{len(resolved)} packages, torch {resolved.get('torch')}, "
        f"triton {resolved.get('triton', '(none)')}",
    )


def check_pins(pythons: list[str]) -> int:
    """Resolve requirements.txt for each supported Python here (pip, default index only) and,
    unless Pythons are named, for :data:`PLATFORMS` too (uv). Exit 1 if any fails."""
    chosen = [Path(p) for p in pythons] or local_pythons()
    versions: dict[str, Path] = {}
    for python in chosen:
        version = _version_of(python)
        supported = (
            bool(version)
            and OLDEST_PYTHON <= tuple(map(int, version.split(".")[:2])) <= NEWEST_PYTHON
        )
        if not supported:
            print(f"  {version or '?':8s} {python}: skipped, outside the supported range")
        else:
            versions.setdefault(version, python)
    jobs = {
        f"pip, Python {version} ({python})": (resolve_with_pip, python)
        for version, python in versions.items()
    }
    if not pythons:
        for platform_name in PLATFORMS:
            for minor in range(OLDEST_PYTHON[1], NEWEST_PYTHON[1] + 1):
                jobs[f"uv, {platform_name}, Python 3.{minor}"] = (
                    resolve_with_uv,
                    platform_name,
                    f"3.{minor}",
                )
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {label: pool.submit(job[0], *job[1:]) for label, job in jobs.items()}
        outcomes = {label: future.result() for label, future in futures.items()}
    for label, (ok, detail) in outcomes.items():
        print(f"{'ok  ' if ok else 'FAIL'} {label}: {detail}")
    failed = sum(not ok for ok, _ in outcomes.values())
    print(f"requirements.txt: {len(outcomes) - failed} of {len(outcomes)} resolutions succeed")
    return 1 if failed or not outcomes else 0


# --------------------------------------------------------------------------------------------
# The commands
# --------------------------------------------------------------------------------------------
# What each command does, for `course.py COMMAND --help` (which installs nothing).
COMMANDS = {
    "book": "create .venv if needed, install requirements.txt, build the book into _build/html "
    "(extra arguments go to `jupyter-book build`: once .venv exists, "
    "`.venv/bin/jupyter-book build --help` lists them)",
    "pdf": "the whole book as one PDF, _build/latex/book.pdf (XeLaTeX; installs Debian's TeX "
    "packages where it may)",
    "test": "create .venv if needed, then run the whole test suite with pytest; extra "
    "arguments go to pytest (paths are taken from the folder you run it in), and --fast skips "
    "the slow tests (chapters, book, browser). Once .venv exists, "
    "`.venv/bin/python -m pytest --help` lists pytest's options",
    "lock": "regenerate requirements.txt from requirements.in (contributors)",
    "check-pins": "resolve requirements.txt for every Python and platform (contributors)",
}
HELP = ("-h", "--help")

# What the suite collects when no path is given (pyproject.toml's testpaths; a test keeps the two
# equal), and pytest's options that take the next argument as their value (so it is no path to
# collect); a bundle of short options such as -qk takes one when its last letter does.
TESTPATHS = ("tests", "notebooks")
PYTEST_VALUE_OPTIONS = {
    "-k", "-m", "-n", "-p", "-o", "-c", "-W", "--maxfail", "--durations", "--dist", "--tb",
    "--junitxml", "--basetemp", "--rootdir", "--deselect", "--ignore", "--ignore-glob",
    "--confcutdir", "--log-level", "--import-mode", "--override-ini", "--config-file",
}  # fmt: skip


def names_a_path(arguments: list[str]) -> bool:
    """Whether pytest ``arguments`` include something to collect (a file, folder or node id)."""
    value_next = False
    for argument in arguments:
        if not value_next and not argument.startswith("-"):
            return True
        bundle = argument.startswith("-") and not argument.startswith("--") and len(argument) > 2
        value_next = argument in PYTEST_VALUE_OPTIONS or (
            bundle and f"-{argument[-1]}" in PYTEST_VALUE_OPTIONS
        )
    return False


def pytest_invocation(folder: Path, arguments: list[str]) -> tuple[Path, list[str]]:
    """Where and with what arguments to run pytest for ``course.py test ARGUMENTS`` called from
    ``folder``: from that folder, so that pytest itself resolves every relative path (those to
    collect, and the values of --ignore, --junitxml, ...), with this repository as its root
    and configuration; with no path given, the suite's :data:`TESTPATHS`."""
    if folder.resolve() == ROOT:
        return ROOT, arguments
    anchored = ["--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml")]
    if not names_a_path(arguments):
        anchored += [str(ROOT / path) for path in TESTPATHS]
    return folder, anchored + arguments


def usage(command: str | None = None) -> str:
    if command is None:
        return __doc__.strip()
    return f"python3 course.py {command}: {COMMANDS[command]}"


def main(argv: list[str]) -> int:
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    if argv[0] in HELP:
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(
            f"error: unknown command {argv[0]!r}; the commands are {', '.join(COMMANDS)} "
            "(python3 course.py --help)",
            file=sys.stderr,
        )
        return 2
    command, extra = argv[0], argv[1:]
    if any(arg in HELP for arg in extra):
        print(usage(command))
        return 0
    ensure_environment()
    env = reproducible_env()  # the same CPU code paths on every machine: bncourse/reproducible.py
    try:
        if command == "book":
            invalidate_stale_site()
            _run([BIN / "jupyter-book", *BOOK_BUILD, *extra], env=env)
            print(f"\nThe book is at {ROOT / '_build' / 'html' / 'index.html'}")
        elif command == "pdf":
            if not ensure_tex():
                print("error: the PDF needs xelatex, latexmk and pdftotext (TEX_PACKAGES)")
                return 1
            invalidate_stale_site()
            _run([BIN / "jupyter-book", *PDF_BUILD, *extra], env=env)
            print(f"\nThe PDF is at {PDF}")
        elif command == "test":
            ensure_sandbox()
            if "--fast" in extra:
                extra = [*FAST, *(arg for arg in extra if arg != "--fast")]
            else:
                ensure_browser()
                ensure_tex()
            folder, arguments = pytest_invocation(Path.cwd(), extra)
            _run([PYTHON, "-m", "pytest", *arguments], cwd=folder, env=env)
        elif command == "lock":
            return lock()
        else:
            return check_pins(extra)
    except subprocess.CalledProcessError as error:
        return error.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
