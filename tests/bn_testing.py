"""Test helpers shared by the BatchNorm tests (test_batchnorm_interface.py, test_torch_bn.py,
test_triton_bn.py).

Tolerances (the reasons are in tests/test_batchnorm_interface.py's docstring), comparisons
of tensors and module states, random inputs in every layout, and the table of erroneous
``F.batch_norm`` calls.  Needs only torch and pytest (no hypothesis), so that the Triton tests
also run on a GPU machine that has just those.
"""

from __future__ import annotations

import torch

from bncourse.conventions import MODULE_FOR_NDIM
from bncourse.display import raised  # noqa: F401  (the tests compare errors with it)

# "out": outputs, "grad": input gradients, "param": weight and bias gradients (sums like the
# input gradient's), "stats": running buffers.
F64 = dict(
    out=dict(rtol=1e-9, atol=1e-10),
    grad=dict(rtol=1e-9, atol=1e-10),
    param=dict(rtol=1e-9, atol=1e-10),
    stats=dict(rtol=1e-10, atol=1e-12),
)
F32 = dict(
    out=dict(rtol=1e-5, atol=2e-5),
    grad=dict(rtol=1e-4, atol=2e-4),
    param=dict(rtol=1e-4, atol=2e-4),
    stats=dict(rtol=1e-5, atol=1e-6),
)
HALF = {
    torch.float16: dict(rtol=2 * 2**-10, atol=2 * 2**-10),
    torch.bfloat16: dict(rtol=2 * 2**-7, atol=2 * 2**-7),
}
TOL = {torch.float64: F64, torch.float32: F32}


def half_tol(dtype: torch.dtype, half_module: bool) -> dict:
    """Tolerances for ``dtype`` (float16 or bfloat16) activations: a module converted to that
    dtype is compared in it throughout; a float32 module (parameters, buffers) keeps float32's
    tolerances for its gradients and buffers."""
    half = HALF[dtype]
    if half_module:
        return dict(out=half, grad=half, param=half, stats=half)
    return dict(out=half, grad=half, param=F32["param"], stats=F32["stats"])


NAMES = MODULE_FOR_NDIM  # torch.nn's class name for each number of dimensions


def module_pair(implementation, ndim, *args, device="cpu", **kwargs):
    """(``implementation``'s module, torch.nn's) for an input of ``ndim`` dimensions, built
    with the same arguments on ``device``.  ``implementation``: bncourse.torch_bn or
    bncourse.triton_bn."""
    name = NAMES[ndim]
    ours = getattr(implementation, name)(*args, **kwargs).to(device)
    theirs = getattr(torch.nn, name)(*args, **kwargs).to(device)
    return ours, theirs


def assert_close(ours, theirs, **tol):
    """Same shape and dtype, values within ``tol`` (``None`` only where theirs is ``None``).
    Against a float64 reference (``theirs`` float64, ``ours`` not), ours is widened first."""
    if theirs is None:
        assert ours is None
        return
    if theirs.dtype == torch.float64 and ours.dtype != torch.float64:
        ours = ours.double()
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    torch.testing.assert_close(ours, theirs, **tol)


def assert_same_state(ours, theirs, tol):
    for name in ("running_mean", "running_var"):
        assert_close(getattr(ours, name), getattr(theirs, name), **tol)
    if theirs.num_batches_tracked is None:
        assert ours.num_batches_tracked is None
    else:
        assert ours.num_batches_tracked.dtype == torch.long
        assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked)


def randomize(module, generator):
    """Random affine parameters and running statistics (positive variances), in place."""
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean"):
            value = getattr(module, name)
            if value is not None:
                value.copy_(torch.randn(value.shape, generator=generator) * 1.5)
        if module.running_var is not None:
            module.running_var.copy_(
                torch.rand(module.running_var.shape, generator=generator) + 0.5
            )


LAYOUTS = ("contiguous", "strided", "transposed", "expanded")  # for any number of dimensions
LAYOUTS_4D = ("channels_last", "channels_last_slice")  # for 4 and 5 dimensions


def make_input(shape, dtype, layout, generator, loc=0.0, scale=1.0):
    """A random tensor of ``shape``, handed over as the view a user's code makes (never
    copied into another layout on the way):

    * ``contiguous``; ``channels_last`` (4 and 5 dimensions);
    * ``strided``: every other element along the last axis of a bigger tensor;
    * ``transposed``: every axis reversed in memory (``t()`` of an ``(C, N)``, the
      ``x.transpose(1, 2)`` of an ``(N, L, C)`` sequence, ...);
    * ``expanded``: one channel's values repeated over the channels (stride 0);
    * ``channels_last_slice``: every other position along the last axis of a channels-last
      tensor (channels innermost, not dense)."""
    shape = tuple(shape)
    channels_last = {4: torch.channels_last, 5: torch.channels_last_3d}.get(len(shape))

    def random(size):
        x = torch.randn(size, generator=generator, dtype=torch.float64)
        return (x * scale + loc).to(dtype)

    if layout == "contiguous":
        x = random(shape)
    elif layout == "channels_last":
        x = random(shape).to(memory_format=channels_last)
    elif layout == "strided":
        x = random((*shape[:-1], 2 * shape[-1]))[..., ::2]
    elif layout == "transposed":
        x = random(shape[::-1]).permute(*reversed(range(len(shape))))
    elif layout == "expanded":
        x = random((shape[0], 1, *shape[2:])).expand(shape)
    elif layout == "channels_last_slice":
        x = random((*shape[:-1], 2 * shape[-1])).to(memory_format=channels_last)[..., ::2]
    else:
        raise ValueError(f"unknown layout {layout!r}")
    assert x.shape == shape
    return x


def assert_same_layout(ours, theirs):
    """The same strides along every axis of more than one element (an axis of one has no
    layout: its stride is arbitrary)."""
    for axis, size in enumerate(theirs.shape):
        if size > 1:
            assert ours.stride(axis) == theirs.stride(axis), (ours.stride(), theirs.stride())


def compare_step(ours, theirs, x, dy, tol, layout, widen=False):
    """One forward and backward of both modules on ``x`` and ``dy`` (given to both as the
    views they are): outputs and input gradients (values and strides), weight and bias
    gradients (then cleared) and buffers, within ``tol`` (keys "out", "grad", "param",
    "stats").  ``widen``: ``theirs`` is a float64 reference, fed the same numbers in float64
    (in the same layout)."""

    def convert(t):  # the same view of float64 numbers: strides kept (empty_strided)
        if not widen:
            return t.detach()
        return torch.empty_strided(t.size(), t.stride(), dtype=torch.float64).copy_(t)

    xs = [x.detach().requires_grad_(), convert(x).requires_grad_()]
    out_ours, out_theirs = ours(xs[0]), theirs(xs[1])
    assert_close(out_ours, out_theirs, **tol["out"])
    assert_same_layout(out_ours, out_theirs)
    # the gradients as the backward passes return them (a leaf's .grad may be a copy)
    names = [n for n in ("weight", "bias") if getattr(theirs, n) is not None]
    for name in ("weight", "bias"):
        assert (getattr(ours, name) is None) == (name not in names)
    grads = [
        torch.autograd.grad(out, [x_, *(getattr(m, n) for n in names)], dy_)
        for out, x_, m, dy_ in (
            (out_ours, xs[0], ours, dy),
            (out_theirs, xs[1], theirs, convert(dy)),
        )
    ]
    assert_close(grads[0][0], grads[1][0], **tol["grad"])
    assert_same_layout(grads[0][0], grads[1][0])
    for g_ours, g_theirs in zip(grads[0][1:], grads[1][1:]):
        assert_close(g_ours, g_theirs, **tol["param"])
    assert_same_state(ours, theirs, tol["stats"])


X = torch.randn(4, 3)
RM, RV = torch.zeros(3), torch.ones(3)
FUNCTIONAL_ERRORS = {
    "one value per channel": ((torch.randn(1, 3), None, None), dict(training=True)),
    "one value per channel, 3d": ((torch.randn(1, 3, 1), None, None), dict(training=True)),
    "running_mean size": ((X, torch.zeros(4), RV), dict(training=True)),
    "running_var size": ((X, RM, torch.ones(2)), dict(training=False)),
    "weight size": ((X, RM, RV, torch.ones(4)), {}),
    "bias size": ((X, RM, RV, None, torch.ones(4)), {}),
    "eval without running_mean": ((X, None, None), dict(training=False)),
    "eval without running_var": ((X, RM, None), dict(training=False)),
    "running_mean without running_var": ((X, RM, None), dict(training=True)),
    "running_var without running_mean": ((X, None, RV), dict(training=True)),
    "wrong size before one missing": ((X, torch.zeros(4), None), dict(training=True)),
    "wrong size before integer input": (
        (torch.ones(4, 3, dtype=torch.long), torch.zeros(4), torch.ones(4)),
        dict(training=True),
    ),
    "2-d running_mean in training": ((X, torch.zeros(1, 3), RV), dict(training=True)),
    "transposed running_mean in training": (
        (torch.randn(4, 4), torch.zeros(2, 2).t(), torch.ones(4)),
        dict(training=True),
    ),
    "2-d running_var in evaluation": ((X, RM, torch.ones(3, 1)), dict(training=False)),
    "eps 0 in training": ((X, None, None), dict(training=True, eps=0.0)),
    "eps < 0 in training": ((X, None, None), dict(training=True, eps=-1.0)),
    "eps < 0 in eval": ((X, RM, RV), dict(training=False, eps=-1.0)),
    "momentum None": ((X, RM, RV), dict(training=True, momentum=None)),
    "momentum a tensor of one element, not 0-d": (
        (X, RM, RV),
        dict(training=True, momentum=torch.tensor([0.3])),
    ),
    "training not a bool": ((X, RM, RV), dict(training=1)),
    "integer input": ((torch.ones(4, 3, dtype=torch.long), None, None), dict(training=True)),
    "complex input": ((torch.ones(4, 3, dtype=torch.complex64), None, None), dict(training=True)),
}
