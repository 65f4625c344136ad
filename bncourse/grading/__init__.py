"""Grading learner notebooks so that the learner's code cannot decide the result.

Two sides, one module each, and one narrow channel between them:

* **trusted** -- :mod:`.cli` (the ``grade`` command: which notebooks and exercises, every
  path checked and read before anything runs, the reports, written after every sandbox has
  ended) and :mod:`.judge` (per notebook: starts the sandbox, then runs each exercise's
  checker, in this process, on a *stand-in* for the learner's function; decides status,
  points and misconception). Nothing learner-made is loaded here: no pickle, no learner
  object, only numbers;
* **the channel** -- :mod:`.protocol`: framed JSON and ``.npy`` arrays (read with
  ``allow_pickle=False``), handles for objects that stay in the sandbox, callbacks for the
  checker's own functions, a size cap per message;
* **the sandbox** -- :mod:`.sandbox`: bubblewrap with new PID, mount, IPC, network (and
  user) namespaces, a read-only system, Python and package, a private ``/tmp`` and home, a
  copy of the learner's folder, a scrubbed environment and resource limits; or, where there
  is no bubblewrap, the same runner unisolated and every report saying so;
* **untrusted** -- :mod:`.runner` (in the sandbox: runs the notebook in a kernel,
  :mod:`.kernel`, keeps each exercise's function by value, :mod:`.capture`, and answers the
  judge's calls) and :mod:`.references` (what each exercise may not call; the runner takes it
  away and tells the judge -- a help for honest mistakes, since the runner is the learner's).

Which exercises a notebook must hold comes from the course's registry (by chapter), never
from the notebook. Teachers' reports (gradebook, class report) are in :mod:`.classroom`;
:mod:`.processes` ends what an unisolated run left behind.
"""

import sys

# nbformat's schema checks import jsonschema, which imports rfc3987-syntax for its "iri"
# format, and that builds about 35 Earley parsers at import: about a second in every process
# that reads a notebook (the grader's command, each sandbox's runner). No notebook schema uses
# that format; without the package, jsonschema leaves the format unchecked, as it does where
# the package is not installed (python-jsonschema/jsonschema#1428).
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[assignment]
