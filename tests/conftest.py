"""Shared test configuration.

Hypothesis runs derandomized (the same examples on every run, so CI is reproducible) with
enough examples to cover shapes of 2 to 5 dimensions and every option combination.  (A
machine without hypothesis can still run the tests that do not use it, such as
tests/test_triton_bn.py on a GPU machine.)
"""
import os

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover - the course's environment always has it
    settings = None

if settings is not None:
    settings.register_profile(
        "course",
        derandomize=True,
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "course"))
