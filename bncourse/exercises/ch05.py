"""Chapter 5, PyTorch with a hand-written backward: an autograd.Function, running_mean with
momentum=None (a prediction), the module's forward.

The module-forward mistakes are modules: small subclasses of chapter 5's
:class:`bncourse.torch_bn.BatchNorm1d`, each overriding the one step it gets wrong
(:meth:`~bncourse.torch_bn.BatchNormNd._count_batch`, which counts the batch and picks the
momentum, or :meth:`~bncourse.torch_bn.BatchNormNd._use_batch_stats`, which picks the
statistics). What a wrong ``module_forward`` leaves behind is what such a module does.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import numpy_bn
from .base import CheckFailed, compare, compare_prediction, exercise, prediction, rng, tuple_text
from .ch02 import FORWARD, forward_cases
from .ch03 import DX, backward_cases
from .ch04 import (
    BATCH_STATS_IN_EVAL,
    NONE_AS_DEFAULT,
    NONE_COUNT_BEFORE_BATCH,
    NONE_NO_UPDATE,
    RUNNING_STATS_IN_TRAINING,
    TF_MOMENTUM,
    float64,
    tensor,
)

CHAPTER = "05_pytorch_module"


# --------------------------------------------------------------------------------------------
# predict-cumulative-mean: running_mean with momentum=None after training and eval calls
# --------------------------------------------------------------------------------------------
CUMULATIVE_BATCH_MEANS = (2.0, 4.0, 9.0)  # three training batches; then one in eval mode
CUMULATIVE_EVAL_MEAN = 100.0


def _ema(means: tuple[float, ...], momentum: float) -> float:
    running = 0.0
    for mean in means:
        running = (1 - momentum) * running + momentum * mean
    return running


@prediction(
    "predict-cumulative-mean",
    chapter=CHAPTER,
    title="Predict running_mean with momentum=None",
    signature="predicted_running_mean: a number, running_mean after the four calls",
)
def check_predict_cumulative_mean(predicted_running_mean: Any) -> str:
    # Tolerance 1e-3: the answer, (2 + 4 + 9) / 3 = 5, is exact; the nearest mistake, the
    # initial 0 averaged in (3.75), is 1.25 away.
    means = CUMULATIVE_BATCH_MEANS
    got = compare_prediction(
        "predicted_running_mean",
        predicted_running_mean,
        sum(means) / len(means),
        tolerance=1e-3,
        mistakes={
            NONE_NO_UPDATE: 0.0,
            NONE_AS_DEFAULT: _ema(means, 0.1),
            "momentum=None is not 'keep the last batch': with momentum = 1 / "
            "num_batches_tracked batch k gets weight 1/k, which makes running_mean the plain "
            "average of all training batches": means[-1],
            "the initial 0 is not averaged in: with momentum=None the first batch gets "
            "weight 1 and replaces it, so running_mean averages the training batches "
            "only": sum(means) / (len(means) + 1),
            "a call in eval mode neither updates running_mean nor counts in num_batches_tracked": (
                sum(means) + CUMULATIVE_EVAL_MEAN
            )
            / (len(means) + 1),
            "eval mode normalizes with running_mean and leaves it alone: it does not replace "
            "it by the batch's mean": CUMULATIVE_EVAL_MEAN,
        },
        otherwise="With momentum=None running_mean is the plain average of the training "
        "batches' means; eval mode does not count",
    )
    return f"you predicted {got}: (2 + 4 + 9) / 3, the eval call does not count"


# --------------------------------------------------------------------------------------------
# BatchNormTrain: a torch.autograd.Function with the closed-form backward
# --------------------------------------------------------------------------------------------
@exercise(
    "autograd-function",
    chapter=CHAPTER,
    title="BatchNorm as a torch.autograd.Function",
    signature="BatchNormTrain(torch.autograd.Function): forward(ctx, x, weight, bias, "
    "eps) and backward(ctx, grad_output) -> (dx, dweight, dbias, None)",
)
def check_autograd_function(candidate: Callable[..., Any]) -> str:
    import torch

    is_function = isinstance(candidate, type) and issubclass(candidate, torch.autograd.Function)
    apply = candidate.apply if is_function else candidate
    for case in backward_cases() + forward_cases()[2:3]:
        x, gamma, eps = case["x"], case["gamma"], case["eps"]
        beta = case.get("beta", rng(45).uniform(-1, 1, size=gamma.shape))
        dout = case.get("dout", rng(46).normal(size=x.shape))
        name = f"BatchNormTrain for x of shape {tuple_text(x.shape)}"
        xt, gt, bt = (tensor(a).requires_grad_() for a in (x, gamma, beta))
        out = apply(xt, gt, bt, eps)
        expected, cache = numpy_bn.forward_train(x, gamma, beta, eps)
        compare(
            f"the output of {name}",
            float64("output", out),
            expected,
            mistakes=FORWARD.answers(x, gamma, beta, eps),
        )
        node = type(out.grad_fn).__name__ if out.grad_fn is not None else None
        if node != f"{getattr(candidate, '__name__', '?')}Backward":
            raise CheckFailed(
                f"the output of {name} has grad_fn {node}: autograd recorded the forward's "
                f"operations instead of one node of your Function. Write a subclass of "
                f"torch.autograd.Function, call it with .apply, and pass the class to check"
            )
        try:
            dx, dgamma, dbeta = torch.autograd.grad(
                out, (xt, gt, bt), tensor(dout), allow_unused=True
            )
        except RuntimeError as error:
            hint, cause = "", ""
            if "incorrect number of gradients" in str(error):
                cause = (
                    "backward returns one gradient per input of forward, in "
                    "order: (dx, dweight, dbias, None), None for eps"
                )
                hint = f" Likely cause: {cause}."
            raise CheckFailed(
                f"backward of {name} raised RuntimeError: {error}{hint}", cause=cause
            ) from None
        right_dx, right_dgamma, right_dbeta = numpy_bn.backward(dout, cache)
        for label, got, right, other in [
            ("dbias", dbeta, right_dbeta, right_dgamma),
            ("dweight", dgamma, right_dgamma, right_dbeta),
        ]:
            if got is None:
                raise CheckFailed(
                    f"{label} from {name} is None: return the gradient of every tensor input"
                )
            compare(
                f"{label} from {name}",
                float64(label, got),
                right,
                mistakes={
                    "dweight and dbias swapped: return (dx, dweight, dbias, None) in "
                    "the order of forward's inputs": other
                },
            )
        if dx is None:
            raise CheckFailed(f"dx from {name} is None: return the gradient of every tensor input")
        compare(
            f"dx from {name}", float64("dx", dx), right_dx, mistakes=DX.answers(dout, x, gamma, eps)
        )
    return "training forward and closed-form backward in one autograd node, (N, C) to (N, C, H, W)"


# --------------------------------------------------------------------------------------------
# module_forward: what nn.BatchNorm*d.forward does with momentum, counts and statistics
# --------------------------------------------------------------------------------------------
@functools.cache
def module_classes() -> dict[str, type]:
    """What a wrong module forward does, as modules: ``{cause: subclass of
    torch_bn.BatchNorm1d}``. Made on first use, so that importing the checkers does not
    import PyTorch (chapters 1 to 4 need only NumPy)."""
    from .. import torch_bn

    class NoneAsTheDefault(torch_bn.BatchNorm1d):
        def _count_batch(self) -> float:
            factor = super()._count_batch()
            return 0.1 if self.momentum is None and self.training else factor

    class NoneAsNoUpdate(torch_bn.BatchNorm1d):
        def _count_batch(self) -> float:
            factor = super()._count_batch()
            return 0.0 if self.momentum is None else factor

    class NoneCountedBeforeTheBatch(torch_bn.BatchNorm1d):
        def _count_batch(self) -> float:
            factor = super()._count_batch()  # counts this batch: the count before it is one less
            if self.momentum is None and self.training and self.track_running_stats:
                return 1.0 / (float(self.num_batches_tracked) - 1)
            return factor

    class TFStyleMomentum(torch_bn.BatchNorm1d):
        def _count_batch(self) -> float:
            factor = super()._count_batch()
            return factor if self.momentum is None or not self.training else 1.0 - factor

    class NotCounted(torch_bn.BatchNorm1d):
        def _count_batch(self) -> float:
            if self.momentum is None and self.training and self.track_running_stats:
                return 1.0 / float(self.num_batches_tracked)  # the count before this batch
            return 0.0 if self.momentum is None else self.momentum

    class CountedInEvaluation(torch_bn.BatchNorm1d):
        def _count_batch(self) -> float:
            if not self.training and self.track_running_stats:
                self.num_batches_tracked.add_(1)
            return super()._count_batch()

    class RunningStatisticsInTraining(torch_bn.BatchNorm1d):
        def _use_batch_stats(self) -> bool:
            return False if self.track_running_stats else super()._use_batch_stats()

    class BatchStatisticsInEvaluation(torch_bn.BatchNorm1d):
        def _use_batch_stats(self) -> bool:
            return True

    return {  # in this order: "not counted" after the momentum mistakes it resembles
        NONE_AS_DEFAULT: NoneAsTheDefault,
        NONE_NO_UPDATE: NoneAsNoUpdate,
        NONE_COUNT_BEFORE_BATCH: NoneCountedBeforeTheBatch,
        TF_MOMENTUM: TFStyleMomentum,
        "num_batches_tracked not incremented: the module counts every training batch (and "
        "momentum=None divides by that count)": NotCounted,
        RUNNING_STATS_IN_TRAINING: RunningStatisticsInTraining,
        BATCH_STATS_IN_EVAL: BatchStatisticsInEvaluation,
        "num_batches_tracked incremented in eval mode: it counts training batches only": (
            CountedInEvaluation
        ),
    }


def after_one_call(module: Any, x: Any) -> tuple[Any, ...]:
    """``(output, running_mean, running_var, num_batches_tracked)`` of one call, as NumPy arrays
    and an int (``None`` where there is no buffer)."""
    import torch

    with torch.no_grad():
        out = module(x)

    def array(t: Any) -> Any:
        return None if t is None else t.detach().cpu().numpy()

    tracked = None if module.num_batches_tracked is None else int(module.num_batches_tracked)
    return array(out), array(module.running_mean), array(module.running_var), tracked


def module_mistakes(module: Any, x: Any) -> dict[str, tuple[Any, ...]]:
    """What each :func:`module_classes` mistake leaves behind after one call on ``x``, starting from
    ``module``'s state (the module itself is not touched). A mistake that raises on this input
    is left out: the checker names those from the exception."""
    found = {}
    for cause, mistaken in module_classes().items():
        wrong = copy.deepcopy(module)
        wrong.__class__ = mistaken  # the same module, with the mistaken step
        try:
            found[cause] = after_one_call(wrong, x)
        except (RuntimeError, ValueError, TypeError, ZeroDivisionError):
            continue
    return found


# The configurations the checker walks through training and evaluation steps (True =
# module.train(), False = module.eval()); each starts from random parameters and running
# statistics, momentum=None after two batches already counted.
MODULE_SCRIPT: list[tuple[dict[str, Any], list[bool]]] = [
    (dict(momentum=0.1), [True, True, False, True]),
    (dict(momentum=None), [True, True, False, True]),
    (dict(momentum=0.3, track_running_stats=False), [True, False]),
    (dict(momentum=0.5, affine=False), [True, False]),
]


def _cause(error: Exception) -> str:
    """The misconception an exception of the learner's module_forward points to, or ""."""
    text = str(error)
    if isinstance(error, TypeError) and "momentum" in text and "NoneType" in text:
        return (
            "momentum=None reached batch_norm; the module turns it into "
            "1 / num_batches_tracked (a cumulative average)"
        )
    if isinstance(error, ZeroDivisionError):
        return NONE_COUNT_BEFORE_BATCH
    if "must be defined in evaluation mode" in text:
        return (
            "without running statistics (track_running_stats=False) "
            "evaluation normalizes with the batch's statistics: pass training=True when "
            "running_mean is None"
        )
    return ""


@exercise(
    "module-forward",
    chapter=CHAPTER,
    title="The forward of nn.BatchNorm: which statistics, which momentum",
    signature="module_forward(module, x) -> out, using torch_bn.batch_norm and updating "
    "module's buffers like nn.BatchNorm*d",
)
def check_module_forward(module_forward: Callable[..., Any]) -> str:
    import torch

    from .. import torch_bn

    steps = 0
    for index, (options, modes) in enumerate(MODULE_SCRIPT):
        generator = torch.Generator().manual_seed(50 + index)
        module = torch_bn.BatchNorm1d(3, dtype=torch.float64, **options)
        with torch.no_grad():
            if module.affine:
                module.weight.uniform_(0.5, 2.0, generator=generator)
                module.bias.uniform_(-1.0, 1.0, generator=generator)
            if module.track_running_stats:
                module.running_mean.uniform_(-1.0, 1.0, generator=generator)
                module.running_var.uniform_(0.5, 3.0, generator=generator)
                module.num_batches_tracked.fill_(2)
        described = ", ".join(f"{k}={v}" for k, v in options.items())
        for training in modes:
            steps += 1
            module.train(training)
            x = torch.randn(3, 3, 2, generator=generator, dtype=torch.float64) * 2 + torch.tensor(
                [-2.0, 0.5, 3.0], dtype=torch.float64
            ).view(1, 3, 1)
            mode = "training" if training else "evaluation"
            name = f"module_forward for BatchNorm1d(3, {described}) in {mode} mode (step {steps})"
            mistakes = module_mistakes(module, x)
            right = after_one_call(copy.deepcopy(module), x)
            try:
                out = module_forward(module, x.clone())
            except NotImplementedError:
                raise
            except (TypeError, ZeroDivisionError, RuntimeError, ValueError) as error:
                cause = _cause(error)
                hint = f" Likely cause: {cause}." if cause else ""
                raise CheckFailed(
                    f"{name} raised {type(error).__name__}: {error}{hint}", cause=cause
                ) from None
            compare(
                f"the output of {name}",
                float64("out", out),
                right[0],
                mistakes={cause: answer[0] for cause, answer in mistakes.items()},
            )
            for slot, key in [(3, "num_batches_tracked"), (1, "running_mean"), (2, "running_var")]:
                if right[slot] is None:
                    continue
                compare(
                    f"{key} after {name}",
                    np.atleast_1d(float64(key, getattr(module, key))),
                    np.atleast_1d(np.asarray(right[slot], dtype=np.float64)),
                    check_dtype=False,
                    mistakes={
                        cause: np.atleast_1d(np.asarray(answer[slot], dtype=np.float64))
                        for cause, answer in mistakes.items()
                    },
                )
    return (
        "momentum=None, train/eval and track_running_stats handled like nn.BatchNorm1d "
        f"over {steps} steps"
    )
