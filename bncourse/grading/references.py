"""What each exercise replaces: the references a candidate may not call while it is judged.

An exercise that asks the learner to *write* BatchNorm's statistics, forward or backward
would be passed by a function that calls the course's own implementation
(``bncourse.numpy_bn``) or PyTorch's (``F.batch_norm``, ``nn.BatchNorm*d``). While the
candidate of such an exercise runs, the runner (:mod:`bncourse.grading.runner`, in the
sandbox) swaps these for stubs that raise, records every run of their code however the
candidate reached it (a name bound before the swap, a copy of the code), and every PyTorch
operator :data:`OPERATORS` names (``aten.native_batch_norm``, reached by any name); the
judge then fails the exercise with "uses the reference". An exercise may still use
what it is *meant* to build on: chapter 5's ``module_forward`` calls ``torch_bn.batch_norm``,
chapter 7's ``freeze_batchnorm`` tests ``isinstance(m, nn.BatchNorm2d)``.

:data:`REFERENCES` maps exercise ids to dotted names (a class's method included); an id that
is not listed replaces nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["OPERATORS", "REFERENCES", "forbidden_operators", "references_for", "resolve"]

NUMPY_BN = tuple(
    f"bncourse.numpy_bn.{name}"
    for name in (
        "batch_stats",
        "forward_train",
        "forward_eval",
        "update_running_stats",
        "backward",
        "backward_staged",
    )
) + ("bncourse.conventions.normalize_over",)
TORCH_BN = ("torch.nn.functional.batch_norm", "torch.batch_norm", "torch.native_batch_norm")
TORCH_BN += ("torch.nn.modules.batchnorm._BatchNorm.forward",)
# chapter 5's module, its formulas and passes, and their compiled variant
COURSE_TORCH_BN = tuple(
    f"bncourse.torch_bn.{name}"
    for name in (
        "batch_norm",
        "BatchNormFunction.forward",
        "batch_stats",
        "two_pass_sums",
        "corrected",
        "merge_blocks",
        "split_plan",
        "in_blocks",
        "channel_sums",
        "update_running_stats",
        "normalize",
        "affine_map",
        "batch_norm_backward",
        "batch_norm_jvp",
        "grad_input_from_sums",
        "in_output_layout",
        "forward_train",
        "forward_eval",
        "backward",
    )
) + tuple(
    f"bncourse.compiled_bn.{name}"
    for name in ("batch_norm", "run", "CompiledBatchNormFunction.forward")
)
WRITE_BATCHNORM = NUMPY_BN + TORCH_BN + COURSE_TORCH_BN

REFERENCES: dict[str, tuple[str, ...]] = {
    "standardize": TORCH_BN,
    "numpy-batch-stats": WRITE_BATCHNORM,
    "numpy-forward": WRITE_BATCHNORM,
    "numpy-backward": WRITE_BATCHNORM,
    "running-stats-update": WRITE_BATCHNORM,
    "batchnorm-modes": WRITE_BATCHNORM,
    "autograd-function": WRITE_BATCHNORM,
    "module-forward": TORCH_BN,
    "identity-params": NUMPY_BN,
    "output-range": WRITE_BATCHNORM,
    "chan-merge": ("bncourse.conventions.merge_stats", "bncourse.conventions.chan_merge"),
    "fold-batchnorm": ("bncourse.fold.fold_batchnorm", "bncourse.fold.folded_affine"),
    "group-norm": ("torch.nn.functional.group_norm", "torch.group_norm"),
}


OPERATORS = {  # a Python reference -> the PyTorch operators that compute it
    "torch.nn.functional.batch_norm": ("batch_norm",),
    "torch.nn.functional.group_norm": ("group_norm",),
}


def forbidden_operators(exercise_id: str) -> tuple[str, ...]:
    """Parts of the names of the PyTorch operators exercise ``exercise_id`` may not run
    (``batch_norm``: ``aten.native_batch_norm``, ``aten._native_batch_norm_legit``, ...):
    whatever Python name reaches them, ``torch.ops.aten`` included."""
    found: list[str] = []
    for dotted in REFERENCES.get(exercise_id, ()):
        found += OPERATORS.get(dotted, ())
    return tuple(dict.fromkeys(found))


def references_for(exercise_id: str) -> tuple[str, ...]:
    """The dotted names exercise ``exercise_id`` replaces (those that exist here)."""
    found = []
    for dotted in REFERENCES.get(exercise_id, ()):
        try:
            owner, name = resolve(dotted)
        except (ImportError, AttributeError):
            continue
        if name in getattr(owner, "__dict__", {}):
            found.append(dotted)
    return tuple(found)


def resolve(dotted: str) -> tuple[Any, str]:
    """``"torch.nn.functional.batch_norm"`` -> (the object that holds it, ``"batch_norm"``):
    the longest importable module prefix, then attributes (a class's method included)."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:-1]:
            owner = getattr(owner, attribute)
        return owner, parts[-1]
    raise ImportError(f"cannot resolve {dotted}")
