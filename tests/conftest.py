"""Shared test configuration.

Hypothesis runs derandomized (the same examples on every run, so CI is reproducible) with
enough examples to cover shapes of 2 to 5 dimensions and every option combination.
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "course",
    derandomize=True,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "course"))
