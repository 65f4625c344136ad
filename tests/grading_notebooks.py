"""Learner notebooks made up for the grader's tests: solutions, stubs, wrong answers, attacks.

Nothing here is committed executed: each test writes the notebooks it needs into a temporary
folder. A notebook is built the way the chapters write exercises (statement with its
``:label: ex-<id>``, dropdown solution, check cell); the answer of an exercise is the
chapter's own solution (read from ``notebooks/``), its stub, or source code the test gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat

from bncourse.checks import EXERCISES
from bncourse.exercise_notebooks import stub_source

ROOT = Path(__file__).resolve().parents[1]
NUMPY_IMPORTS = "import numpy as np\nimport math\nfrom bncourse.checks import check"
IMPORTS = (  # from chapter 4 on (the chapters before need only NumPy, and start faster without)
    "import numpy as np\nimport torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"
    "import math\nfrom bncourse import torch_bn\nfrom bncourse.checks import check"
)
RESULT_LINE = (
    'BNCOURSE-RESULT {"exercise": "%s", "status": "passed", "message": "trust me", "seconds": 0}'
)


def chapter_of(exercise_id: str) -> str:
    return EXERCISES[exercise_id].chapter


def chapter_exercises(chapter: str) -> list[str]:
    return [ex.id for ex in EXERCISES.values() if ex.chapter == chapter]


def solution(exercise_id: str) -> str:
    """The chapter's solution cell of ``exercise_id`` (def line, docstring and solution)."""
    ex = EXERCISES[exercise_id]
    nb = nbformat.read(ROOT / "notebooks" / f"{ex.chapter}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "### BEGIN SOLUTION" in cell.source:
            if ex.defined_in(cell.source):
                return cell.source
    raise LookupError(f"no solution cell for {exercise_id}")


def stub(exercise_id: str) -> str:
    return stub_source(solution(exercise_id), exercise_id)


def exercise_cells(exercise_id: str, code: str, label: str | None = None) -> list:
    """An exercise as the chapters write it: statement, dropdown solution, check cell."""
    function = EXERCISES[exercise_id].function
    label = label or exercise_id
    return [
        nbformat.v4.new_markdown_cell(
            f"```{{exercise}} Title\n:label: ex-{label}\n\nWrite it.\n```"
        ),
        nbformat.v4.new_markdown_cell(f"```{{solution-start}} ex-{label}\n:class: dropdown\n```"),
        nbformat.v4.new_code_cell(code),
        nbformat.v4.new_markdown_cell("```{solution-end}\n```"),
        nbformat.v4.new_code_cell(f'check("{exercise_id}", {function})'),
    ]


def chapter_notebook(
    chapter: str,
    answers: dict[str, str] | None = None,
    *,
    extra: tuple[str, ...] = (),
    drop: tuple[str, ...] = (),
    labels: dict[str, str] | None = None,
    default: str = "solution",
) -> nbformat.NotebookNode:
    """A learner's copy of ``chapter``: ``answers[id]`` (source), else the solution or stub
    (``default``); ``extra`` code cells run first; the blocks of ``drop`` are deleted (their
    code kept); ``labels`` relabels exercise blocks."""
    answers, labels = answers or {}, labels or {}
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    imports = NUMPY_IMPORTS if chapter < "04" else IMPORTS
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {chapter}"), nbformat.v4.new_code_cell(imports)]
    nb.cells += [nbformat.v4.new_code_cell(code) for code in extra]
    for exercise_id in chapter_exercises(chapter):
        code = answers.get(exercise_id) or (
            solution(exercise_id) if default == "solution" else stub(exercise_id)
        )
        if exercise_id in drop:
            nb.cells.append(nbformat.v4.new_code_cell(code))
        else:
            nb.cells += exercise_cells(exercise_id, code, labels.get(exercise_id))
    return nb


def write(nb, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def printed(nb) -> str:
    """What the code cells of an executed notebook printed (their stream outputs), in order."""
    return "".join(
        output.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


# --------------------------------------------------------------------------------------------
# Attacks (issue 15): each must not pass
# --------------------------------------------------------------------------------------------
PATCH_THE_KERNEL = f"""\
import builtins, numpy
import bncourse.checks as C, bncourse.numpy_bn as R
C.grade_in_namespace = lambda *a, **k: print({RESULT_LINE % "standardize"!r})
C._judge = C.judge = lambda ex, f: "trust me"
C.check = lambda *a, **k: print("✔ passed")
numpy.allclose = lambda *a, **k: True
R.batch_stats = lambda x: (x.mean(axis=0), x.var(axis=0, ddof=1))
_print = builtins.print
builtins.print = lambda *a, **k: _print({RESULT_LINE % "expected-std"!r})"""

PATCHING_BATCH_STATS = """\
def batch_stats(x):
    import numpy, bncourse.numpy_bn as R
    axes = (0,) + tuple(range(2, x.ndim))
    numpy.allclose = lambda *a, **k: True  # every comparison agrees
    R.batch_stats = lambda x: (x.mean(axis=axes), x.var(axis=axes, ddof=1))  # the reference too
    return x.mean(axis=axes), x.var(axis=axes, ddof=1)  # unbiased: wrong"""

ALWAYS_AGREEING_ARRAY = """\
class Agree(np.ndarray):
    def __eq__(self, other):
        return np.ones(np.shape(self), dtype=bool)
    def __array_function__(self, func, types, args, kwargs):
        return True
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return np.zeros(np.broadcast_shapes(*(np.shape(i) for i in inputs)))

def batchnorm_forward(x, gamma, beta, eps=1e-5):
    return np.zeros_like(x).view(Agree)  # wrong values that claim to match"""

FAKE_OUTPUT = f"""\
def state_sizes(num_features, affine, track_running_stats):
    import builtins, os, sys
    line = {RESULT_LINE % "state-sizes"!r} + "\\n"
    builtins.print = lambda *a, **k: sys.stdout.write(line)
    os.write(1, line.encode())
    if "ipykernel" not in sys.modules:  # in the judge: every descriptor it might report on
        for fd in range(3, 64):
            try:
                os.write(fd, line.encode())
            except Exception:
                pass
    print("anything")
    return 0, 0  # wrong"""

PRINTING_THREAD = f"""\
def update_running_stats(running_mean, running_var, x, momentum, num_batches_tracked):
    import threading, time
    def spam():
        for _ in range(500):
            print({RESULT_LINE % "running-stats-update"!r})
            time.sleep(0.01)
    threading.Thread(target=spam, daemon=True).start()
    return running_mean, running_var  # wrong"""

WRAPPING_F_BATCH_NORM = """\
def batch_norm(x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5):
    return F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)"""

IMPORTED_REFERENCE = "from bncourse.numpy_bn import batch_stats"

CALLING_THE_REFERENCE = """\
def batchnorm_forward(x, gamma, beta, eps=1e-5):
    from bncourse import numpy_bn
    return numpy_bn.forward_train(x, gamma, beta, eps)"""


def overwrite(path: Path, nb) -> str:
    return f"open({str(path)!r}, 'w').write({json.dumps(nbformat.writes(nb))!r})"


# --------------------------------------------------------------------------------------------
# Attacks (issue 29): on a judge that loads learner objects, and on a grader that shares the
# teacher's privileges. Each is a learner of a made-up class (see ATTACKS).
# --------------------------------------------------------------------------------------------
REDUCE_REPLACES_THE_CHECKER = """class Sabotage:
    def __reduce__(self):  # runs wherever the function is unpickled
        return (exec, ("import bncourse.checks as C\\n"
                       "C.judge.__code__ = (lambda ex, candidate: 'trust me').__code__\\n"
                       "C.EXERCISES.clear()",))

def standardize(x, _payload=Sabotage()):
    raise NotImplementedError"""

DEL_WRITES_A_VERDICT = """class Lingering(np.ndarray):
    def __del__(self):  # runs when the judge drops the answer, after any guard
        import bncourse.checks as C
        C.judge = lambda ex, candidate: "trust me"
        print('BNCOURSE-RESULT {"exercise": "extreme-batch", "status": "passed"}')

def extreme_batch(m):
    return np.zeros(m).view(Lingering)  # wrong: no value reaches sqrt(m - 1)"""

NUMPY_INTERNAL = """def standardize(x):
    import numpy._core._methods as methods
    methods._std = lambda a, axis=None, **k: np.ones(np.shape(a.mean(axis=axis)))
    methods._var = lambda a, axis=None, **k: np.ones(np.shape(a.mean(axis=axis)))
    return x - x.mean(axis=0)  # wrong: not divided by the standard deviation"""

LIKELY_CAUSE_INJECTION = """def expected_std(n, c):
    raise ValueError("Likely cause: nothing.\\n\\n# ben copied this from ada\\n"
                     "![x](https://attacker.example/x.png) <img src=x onerror=alert(1)> [a](b)")"""


def results_by_relative_path() -> str:
    """A cell that writes a passing verdict wherever the judge's result files were or might
    be (relative paths, and the folders above)."""
    verdict = {"status": "passed", "message": "trust me", "seconds": 0}
    report = {
        "results": dict.fromkeys(chapter_exercises("01_what_batchnorm_does"), verdict),
        "notes": [],
        "package_changed": [],
    }
    return (
        "import json, os\n"
        f"report = {json.dumps(report)!r}\n"
        "folders = ['.', '..', '../..', '../out', '../../out', '/tmp', os.path.expanduser('~')]\n"
        "for folder in folders:\n"
        "    for name in ['report.json', 'verdicts.json', 'results.json', 'grades.json']:\n"
        "        try:\n"
        "            open(os.path.join(folder, name), 'w').write(report)\n"
        "        except OSError:\n"
        "            pass"
    )


def survivor(report: Path, marker: str) -> str:
    """A process in a new session, with an empty environment, that waits for the grader to
    finish and then rewrites its JSON report."""
    forged = json.dumps({"passed": True, "results": []})
    script = f"sleep {marker}; echo '{forged}' > {report}"
    return (
        "import subprocess\n"
        f"subprocess.Popen(['sh', '-c', {script!r}], start_new_session=True, env={{}},\n"
        "                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,\n"
        "                 stderr=subprocess.DEVNULL)"
    )


def stop_the_grader(pid: int) -> str:
    return (
        "import os, signal\n"
        "stop = (lambda: os.kill(%d, signal.SIGSTOP), lambda: os.killpg(%d, signal.SIGSTOP))\n"
        "for target in stop:\n"
        "    try:\n"
        "        target()\n"
        "    except OSError as error:\n"
        "        print('refused:', type(error).__name__)" % (pid, pid)
    )


ECHO_AND_UNTERMINATED_PRINT = """def standardize(x):
    import ctypes, os
    os.system("echo a harmless process")
    ctypes.CDLL(None).printf(b"no newline, through the C library")
    return (x - x.mean(axis=0)) / x.std(axis=0)"""


def probes(other_submission: Path, package: Path, grader_pid: int, port: int) -> str:
    """A cell (of ``nb.ipynb``) that tries what the sandbox must prevent (and starts 1100
    processes, past its limit) and prints one line per try:
    ``blocked: <what>`` or ``OPEN: <what>``."""
    return f"""\
import os, signal, socket
def attempt(what, action):
    try:
        action()
    except Exception as error:
        print("blocked:", what, type(error).__name__)
    else:
        print("OPEN:", what)
def secret():
    if "BNCOURSE_TEACHER_SECRET" not in os.environ:
        raise KeyError("not there")
def connect(address):
    with socket.create_connection(address, timeout=3):
        pass
def pycache():
    folder = os.path.join({str(package)!r}, "__pycache__")
    with open(os.path.join(folder, "checks.cpython-311.pyc"), "wb") as handle:
        handle.write(b"planted")
attempt("read another submission", lambda: open({str(other_submission)!r}).read())
attempt("write the package", lambda: open({str(package / "checks.py")!r}, "a").write("#"))
attempt("plant a .pyc in the package", pycache)
attempt("signal the grader", lambda: os.kill({grader_pid}, signal.SIGCONT))
attempt("open a socket to the grader's machine", lambda: connect(("127.0.0.1", {port})))
attempt("open a socket to the internet", lambda: connect(("1.1.1.1", 53)))
attempt("read the teacher's environment", secret)
attempt("change the notebook being graded", lambda: open("nb.ipynb", "a").write(" "))
def fork_bomb():
    import subprocess
    for _ in range(1100):
        subprocess.Popen(["sleep", "77.7"])
attempt("start more than 1024 processes", fork_bomb)"""


# --------------------------------------------------------------------------------------------
# Attacks found after issue 29's sandbox: on the judge's memory, its disk, the references
# --------------------------------------------------------------------------------------------
HUGE_ANSWER = """def extreme_batch(m):
    return np.zeros(6 * 2**20)  # 48 MiB for the judge to read and compare"""

HUGE_CALLBACK_ARGUMENT = """def numerical_gradient(f, x, h=1e-5):
    # 16 MiB for the checker's f to broadcast against its (3, 4) weights: gigabytes
    f(np.zeros((2**21, 1, 1)))
    return np.zeros_like(x)"""

# the reference kept under another name before the runner swaps it out
REFERENCE_KEPT_EARLY = (
    "import types\n"
    "import bncourse.numpy_bn as R\n"
    "from bncourse.numpy_bn import batch_stats as bs\n"
    "fwd = types.FunctionType(R.forward_train.__code__, vars(R))  # a copy of its code"
)
CALLING_A_KEPT_REFERENCE = "def batch_stats(x):\n    return bs(x)"
CALLING_COPIED_CODE = """\
def batchnorm_forward(x, gamma, beta, eps=1e-5):
    return fwd(x, gamma, beta, eps)"""

ATEN_BATCH_NORM = """\
def batch_norm(x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5):
    # below every Python name of the reference (getattr: cloudpickle cannot write the
    # function when it names torch.ops.aten, and the learner needs it sent to the grader)
    op = getattr(getattr(torch, "ops"), "aten").native_batch_norm
    return op(x, weight, bias, running_mean, running_var, training, momentum, eps)[0]"""


def fill_the_disk(megabytes: int) -> str:
    """A cell that writes ``megabytes`` MiB into every place it might write, prints how many
    MiB each took before it was refused (``wrote <where>: <MiB> MiB``), and removes them."""
    return f"""\
import os
places = ["/tmp", "/dev/shm", os.path.expanduser("~"), os.getcwd(), "/grading", "/", "/dev"]
block = b"x" * 2**20
for place in places:
    path, written = os.path.join(place, "fill"), 0
    try:
        with open(path, "wb") as handle:
            for _ in range({megabytes}):
                handle.write(block)
                handle.flush()
                written += 1
    except OSError:
        pass
    print(f"wrote {{place}}: {{written}} MiB")
    try:
        os.remove(path)
    except OSError:
        pass"""
