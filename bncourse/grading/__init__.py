"""Grading a learner's notebook so that the learner's code cannot decide the result.

The process model (each step in its own module):

* the grader (:mod:`bncourse.grader`, the ``grade`` command) reads every learner notebook
  before anything runs, takes a hash manifest of ``bncourse/`` (:mod:`.manifest`) and, per
  notebook, starts a worker in a new session and waits for it with a deadline: a worker that
  is killed or runs too long still gives a report row that says so;
* the worker (:mod:`.worker`) grades one notebook in a temporary copy of its folder: it runs
  the notebook in a kernel (:mod:`.kernel`), asks the kernel for each exercise's function as
  bytes (:mod:`.capture`), ends every process the notebook started (:mod:`.processes`),
  verifies the manifest, and starts the judge;
* the judge (:mod:`.judge`), a fresh process that never ran learner code, forks one child per
  exercise that loads the function and runs the exercise's checker on it under the rules of
  :mod:`.sandbox` (references taken away per exercise, :mod:`.references`; answers rebuilt
  from base types, :mod:`.plain`); verdicts return over pipes and files, never stdout.

Which exercises a notebook must hold comes from the course's registry (by chapter), never from
the notebook. Teachers' reports (gradebook, class report) are in :mod:`.classroom`.
"""
