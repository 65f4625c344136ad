"""Small models trained on the handwritten digits, for the chapter "BatchNorm in training".

Data: :func:`load_digits` wraps ``sklearn.datasets.load_digits``, 1797 greyscale images of
8x8 pixels in 10 classes that ship with scikit-learn (nothing is downloaded).

Conventions:

* Images are :data:`DTYPE` (float64) tensors of shape ``(N, 1, 8, 8)`` with pixels scaled
  from 0..16 to ``[0, 1]``; labels are int64 of shape ``(N,)``.  Every model takes
  ``(N, 1, 8, 8)`` and returns logits of shape ``(N, 10)`` (the MLP flattens first); its
  parameters are :data:`DTYPE` too.
* ``norm`` names the layer put after every hidden linear or convolution layer, one of
  :data:`NORMS`: ``"none"``, ``"batch"`` (``BatchNorm1d/2d``), ``"layer"`` (statistics per
  sample over all features: ``LayerNorm`` for the MLP, ``GroupNorm(1, C)`` for the CNN, which
  is LayerNorm over ``(C, H, W)`` with per-channel gamma and beta) or ``"group"``
  (``GroupNorm`` with :data:`GROUPS` groups of channels).  By default it sits
  before the ReLU, where the paper puts it; ``norm_after_activation=True`` moves it after.
* Weights are He-normal times ``init_scale``: ``std = init_scale * sqrt(2 / fan_in)``, biases
  0.  ``init_scale = 1`` keeps the size of activations through ReLU layers; without
  normalization each layer multiplies it by about ``init_scale``.
* Determinism: no result depends on the global random state.  Each function that draws
  random numbers takes a ``seed`` and uses its own ``torch.Generator`` (:func:`make_model`
  replaces PyTorch's default initialisation with :func:`init_weights`), so the same call
  gives the same result bit for bit on the same machine and thread count.
* The same printed accuracies on every machine: training is chaotic, so a difference in the
  last bit (another CPU's instruction set or thread count adds in another order) grows over
  a few hundred SGD steps into a different printed accuracy in float32.  In float64
  (:data:`DTYPE`) such differences start 10^9 times smaller and stay far below what a
  printed accuracy can show (chapter 7, "Why float64", measures both).  These models are
  small, so float64 costs no noticeable time.

Functions: :func:`load_digits`, :func:`mlp`, :func:`cnn`, :func:`make_model`,
:func:`init_weights`, :func:`perturb`, :func:`train`, :func:`evaluate`, :func:`batchnorm_layers`,
:func:`freeze_batchnorm`, :func:`recompute_batchnorm_statistics`, :func:`activations`; the
module :class:`ShiftNoise` ("noisy BatchNorm", chapter 7) and the recorder :class:`Diagnostics`
(per-layer activations, gradients, zero fraction and update-to-weight ratio during training).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

__all__ = [
    "NORMS",
    "GROUPS",
    "DTYPE",
    "Digits",
    "History",
    "load_digits",
    "mlp",
    "cnn",
    "make_model",
    "init_weights",
    "perturb",
    "train",
    "evaluate",
    "batchnorm_layers",
    "freeze_batchnorm",
    "recompute_batchnorm_statistics",
    "accuracy_per_epoch",
    "activations",
    "ShiftNoise",
    "noisy_batchnorm",
    "Diagnostics",
]

NORMS = ("none", "batch", "layer", "group")
GROUPS = 4
DTYPE = torch.float64  # of the data and the models: see "The same printed accuracies" above


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Digits:
    """The digits split into a training and a test set (see :func:`load_digits`)."""

    train_x: torch.Tensor  # (N_train, 1, 8, 8) DTYPE in [0, 1]
    train_y: torch.Tensor  # (N_train,) int64 in 0..9
    test_x: torch.Tensor  # (N_test, 1, 8, 8)
    test_y: torch.Tensor  # (N_test,)


def load_digits(test_fraction: float = 0.3, seed: int = 0) -> Digits:
    """The scikit-learn digits as tensors, split per class (stratified) into train and test.

    Within each class a fraction ``test_fraction`` of the images (rounded) goes to the test
    set, chosen by a NumPy generator seeded with ``seed``; both sets keep the original order
    of the images.  With the defaults: 1258 training and 539 test images.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = bunch.images.astype(np.float64) / 16.0
    labels = bunch.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(labels), dtype=bool)
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        chosen = rng.choice(members, size=round(test_fraction * len(members)), replace=False)
        is_test[chosen] = True

    def tensors(mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(images[mask][:, None]), torch.from_numpy(labels[mask])

    train_x, train_y = tensors(~is_test)
    test_x, test_y = tensors(is_test)
    return Digits(train_x, train_y, test_x, test_y)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------
def _norm(norm: str, channels: int, spatial: bool) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels) if spatial else nn.BatchNorm1d(channels)
    if norm == "layer":
        return nn.GroupNorm(1, channels) if spatial else nn.LayerNorm(channels)
    if norm == "group":
        return nn.GroupNorm(GROUPS, channels)
    raise ValueError(f"norm should be one of {NORMS}, got {norm!r}")


def _block(
    layer: nn.Module, norm: str, channels: int, spatial: bool, after: bool
) -> list[nn.Module]:
    """``layer``, then the normalization and ReLU in the requested order."""
    if norm == "none":
        return [layer, nn.ReLU()]
    normalization = _norm(norm, channels, spatial)
    return [layer, nn.ReLU(), normalization] if after else [layer, normalization, nn.ReLU()]


def mlp(
    norm: str = "none", width: int = 64, depth: int = 4, *, norm_after_activation: bool = False
) -> nn.Sequential:
    """Flatten, then ``depth`` hidden blocks (Linear, norm, ReLU) of ``width`` units, then a
    Linear layer to 10.

    With a normalization layer the hidden Linear layers keep their bias (PyTorch's default),
    even though a bias right before BatchNorm is redundant (chapter 6 shows why): the models
    differ only by the normalization layers.
    """
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = 64
    for _ in range(depth):
        layers += _block(nn.Linear(fan_in, width), norm, width, False, norm_after_activation)
        fan_in = width
    layers.append(nn.Linear(fan_in, 10))
    return nn.Sequential(*layers)


def cnn(
    norm: str = "none", channels: tuple[int, int] = (8, 16), *, norm_after_activation: bool = False
) -> nn.Sequential:
    """Two 3x3 convolution blocks (conv, norm, ReLU), 2x2 max pooling after each, then Linear to 10.

    Shapes: ``(N, 1, 8, 8) -> (N, c1, 4, 4) -> (N, c2, 2, 2) -> (N, 10)``.
    """
    c1, c2 = channels
    return nn.Sequential(
        *_block(nn.Conv2d(1, c1, 3, padding=1), norm, c1, True, norm_after_activation),
        nn.MaxPool2d(2),
        *_block(nn.Conv2d(c1, c2, 3, padding=1), norm, c2, True, norm_after_activation),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * 4, 10),
    )


def init_weights(model: nn.Module, init_scale: float = 1.0, seed: int = 0) -> nn.Module:
    """He-normal weights times ``init_scale`` for every Linear and Conv2d, zero biases;
    returns ``model``.

    Normalization layers keep PyTorch's initialization (gamma = 1, beta = 0).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                fan_in = module.weight[0].numel()
                std = init_scale * math.sqrt(2.0 / fan_in)
                nn.init.normal_(module.weight, 0.0, std, generator=generator)
                if module.bias is not None:
                    module.bias.zero_()
    return model


def make_model(
    kind: str, norm: str = "none", init_scale: float = 1.0, seed: int = 0, **options
) -> nn.Sequential:
    """``mlp(norm, **options)`` or ``cnn(norm, **options)`` (``kind`` is ``"mlp"`` or ``"cnn"``),
    in :data:`DTYPE`, initialized."""
    builders = {"mlp": mlp, "cnn": cnn}
    if kind not in builders:
        raise ValueError(f"kind should be 'mlp' or 'cnn', got {kind!r}")
    return init_weights(builders[kind](norm, **options).to(DTYPE), init_scale, seed)


def perturb(model: nn.Module, relative: float, seed: int = 0) -> nn.Module:
    """Multiply every parameter of ``model`` by ``1 + relative * z`` (``z`` standard normal,
    drawn from a generator seeded with ``seed``); returns ``model``.

    With ``relative`` near 1e-7 this is what rounding the weights to float32 would change:
    a stand-in for another machine's last-bit differences (chapter 7, "Why float64").
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.mul_(1 + relative * noise)
    return model


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers of ``model`` (any ``BatchNorm1d/2d/3d``), in order."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def freeze_batchnorm(model: nn.Module) -> nn.Module:
    """Freeze every BatchNorm layer of ``model`` for fine-tuning; returns ``model``.

    Each BatchNorm layer goes to eval mode (it normalizes with its running statistics and
    stops updating them) and its gamma and beta stop receiving gradients; every other layer
    keeps its mode.  ``model.train()`` puts the layers back in training mode, so call this
    after every ``model.train()`` (as :func:`train` does with ``frozen_batchnorm=True``).
    """
    for layer in batchnorm_layers(model):
        layer.eval()
        for parameter in layer.parameters():
            parameter.requires_grad_(False)
    return model


# --------------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------------
@dataclass
class History:
    """What :func:`train` records.

    ``step_loss``: the training loss of every step (as the optimizer saw it, in training
    mode).  ``test_loss``/``test_accuracy``: after every epoch, in eval mode on the test set.
    ``train_loss``: after every epoch, in eval mode on the whole training set, recorded only
    when :func:`train` is given ``stop_at_train_loss`` (it costs one more pass).
    ``diverged``: the loss became non-finite; training stopped there and the remaining
    epochs are recorded as ``nan`` loss and chance accuracy 0.1.
    """

    step_loss: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    diverged: bool = False

    @property
    def final_accuracy(self) -> float:
        return self.test_accuracy[-1]


def train(
    model: nn.Module,
    data: Digits,
    *,
    epochs: int = 5,
    batch_size: int = 32,
    lr: float = 0.05,
    momentum: float = 0.9,
    seed: int = 0,
    frozen_batchnorm: bool = False,
    steps: int | None = None,
    stop_at_train_loss: float | None = None,
    monitor: Diagnostics | None = None,
    after_epoch: Callable[[nn.Module], None] | None = None,
) -> History:
    """Train ``model`` with SGD (with momentum) on cross-entropy; returns its :class:`History`.

    Every epoch visits the training images once in an order drawn from a generator seeded
    with ``seed``; a last batch smaller than ``batch_size`` is dropped (a BatchNorm layer
    cannot train on a batch of one).  After every epoch the model is evaluated on the test
    set in eval mode; it is left in training mode.  ``frozen_batchnorm=True`` applies
    :func:`freeze_batchnorm` after ``model.train()`` at the start of every epoch
    (fine-tuning with frozen BatchNorm: SGD skips the parameters that get no gradient).

    ``steps``: stop after this many SGD steps instead (``epochs`` is then ignored; the last
    epoch may be partial and is evaluated like the others), so that runs with different
    batch sizes can be compared at the same number of steps.  ``stop_at_train_loss``: after
    every epoch also record the training loss (eval mode, whole training set) and stop once
    it is at or below this value (at most ``epochs`` epochs): runs compared at a matched
    training loss.  ``monitor``: a :class:`Diagnostics` attached to ``model``, told of every
    step (``before_step`` after the backward pass, ``after_step`` after the update).
    ``after_epoch``: called with ``model`` after every epoch's evaluation (a checkpoint; it
    must leave ``model`` as it found it, e.g. work on a copy).
    """
    if steps is not None:
        per_epoch = (len(data.train_y) - batch_size) // batch_size + 1
        epochs = -(-steps // per_epoch)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loss_fn = nn.CrossEntropyLoss()
    history = History()
    n = len(data.train_y)
    for _ in range(epochs):
        model.train()
        if frozen_batchnorm:
            freeze_batchnorm(model)
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            index = order[start : start + batch_size]
            loss = loss_fn(model(data.train_x[index]), data.train_y[index])
            if not torch.isfinite(loss):
                history.diverged = True
                break
            optimizer.zero_grad()
            loss.backward()
            if monitor is not None:
                monitor.before_step()
            optimizer.step()
            if monitor is not None:
                monitor.after_step()
            history.step_loss.append(loss.item())
            if steps is not None and len(history.step_loss) == steps:
                break
        if history.diverged:
            missing = epochs - len(history.test_loss)
            history.test_loss += [math.nan] * missing
            history.test_accuracy += [0.1] * missing
            break
        test_loss, test_accuracy = evaluate(model, data.test_x, data.test_y)
        history.test_loss.append(test_loss)
        history.test_accuracy.append(test_accuracy)
        if after_epoch is not None:
            after_epoch(model)
        if stop_at_train_loss is not None:
            history.train_loss.append(evaluate(model, data.train_x, data.train_y)[0])
            if history.train_loss[-1] <= stop_at_train_loss:
                break
    model.train()
    return history


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    train_mode: bool = False,
    batch_size: int | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``, without gradients.

    ``train_mode=False`` (the default) evaluates in eval mode: BatchNorm uses its running
    statistics and each image's prediction is independent of the others.  ``train_mode=True``
    evaluates in training mode, which is what forgetting ``model.eval()`` does: BatchNorm
    normalizes with the statistics of each batch of about ``batch_size`` images (the images
    are split into ``len(y) // batch_size`` consecutive batches, so a few batches hold one
    image more, and none holds a single image; default: one batch of all of them).  It runs
    on a copy of the model, so ``model`` itself (its running statistics included) is never
    changed.
    """
    batch_size = batch_size or len(y)
    runner = copy.deepcopy(model).train(train_mode)
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for index in torch.arange(len(y)).tensor_split(max(1, len(y) // batch_size)):
            logits = runner(x[index])
            total_loss += nn.functional.cross_entropy(logits, y[index], reduction="sum").item()
            correct += int((logits.argmax(dim=1) == y[index]).sum())
    return total_loss / len(y), correct / len(y)


def accuracy_per_epoch(
    model: nn.Module, data: Digits, **train_options: Any
) -> tuple[list[float], list[float]]:
    """Train ``model`` with :func:`train` and return its test accuracy after every epoch in
    eval mode twice: with the running statistics as training left them, and with the same
    checkpoint's statistics re-estimated (:func:`recompute_batchnorm_statistics` on a copy,
    from the training images in batches of 64).  Where the second curve is steadier than
    the first, the running statistics made the difference; where it swings as much, the
    weights did.  ``train_options`` go to :func:`train`."""
    recomputed: list[float] = []

    def checkpoint(trained: nn.Module) -> None:
        copied = recompute_batchnorm_statistics(copy.deepcopy(trained), data.train_x)
        recomputed.append(evaluate(copied, data.test_x, data.test_y)[1])

    history = train(model, data, after_epoch=checkpoint, **train_options)
    return history.test_accuracy, recomputed


def recompute_batchnorm_statistics(
    model: nn.Module, x: torch.Tensor, batch_size: int = 64
) -> nn.Module:
    """Replace the running statistics of every BatchNorm layer of ``model`` by those of ``x``.

    The fix for a model that is worse in eval mode because its running averages lag the
    weights or came from small batches: each BatchNorm layer is reset
    (``reset_running_stats``) and given ``momentum=None``, which makes its running mean and
    variance the plain average over all the batches it then sees; ``x`` (shape ``(N, ...)``)
    goes through ``model`` once, in training mode, in consecutive batches of ``batch_size``
    (a last partial batch is dropped, as in :func:`train`), without gradients.  The weights,
    gamma and beta are not changed; each layer's momentum and every module's mode are put
    back.  Returns ``model``.
    """
    layers = batchnorm_layers(model)
    momenta = [layer.momentum for layer in layers]
    modes = {module: module.training for module in model.modules()}
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    model.train()
    try:
        with torch.no_grad():
            for start in range(0, len(x) - batch_size + 1, batch_size):
                model(x[start : start + batch_size])
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        for module, mode in modes.items():
            module.training = mode
    return model


class ShiftNoise(nn.Module):
    """Noise with a non-zero mean and a non-unit variance that change at every step.

    Santurkar et al. (2018) put such noise right after each BatchNorm layer ("noisy
    BatchNorm") to undo what BatchNorm does to the distribution of the next layer's input.
    Here, in training mode, every forward call draws for each channel ``j`` a shift
    ``mu_j ~ U(-shift, shift)`` and a factor ``s_j ~ U(1 / scale, scale)`` (uniform on a log
    scale) and returns ``s_j * x + mu_j``: each channel's mean and variance jump from one step
    to the next, so the next layer's input distribution changes at every step, BatchNorm or
    not.  In eval mode it is the identity (the median transformation).  Random numbers come
    from the module's own generator seeded with ``seed``.  Input ``(N, C)`` or
    ``(N, C, *spatial)``.
    """

    def __init__(self, shift: float = 1.0, scale: float = 2.0, seed: int = 0) -> None:
        super().__init__()
        self.shift, self.scale = shift, scale
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        shape = (1, x.shape[1]) + (1,) * (x.dim() - 2)
        draw = dict(generator=self.generator, dtype=x.dtype)
        mu = (2 * torch.rand(shape, **draw) - 1) * self.shift
        s = self.scale ** (2 * torch.rand(shape, **draw) - 1)
        return s * x + mu

    def extra_repr(self) -> str:
        return f"shift={self.shift}, scale={self.scale}"


def noisy_batchnorm(model: nn.Sequential, shift: float = 1.0, scale: float = 2.0, seed: int = 0):
    """A copy of ``model`` with a :class:`ShiftNoise` right after every BatchNorm layer (the
    ``k``-th seeded with ``seed + k``)."""
    layers: list[nn.Module] = []
    for module in copy.deepcopy(model):
        layers.append(module)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            layers.append(ShiftNoise(shift, scale, seed + len(layers)))
    return nn.Sequential(*layers)


class Diagnostics:
    """Records what happens inside ``model`` during :func:`train` (``train(..., monitor=it)``).

    Layers: the hidden layers are the ReLUs of ``model`` (one per hidden block), the weighted
    layers every ``Linear``/``Conv2d`` (the hidden ones and the output layer).  At every step:

    * ``zero_fraction[t][l]``: the fraction of the outputs of ReLU ``l`` that are exactly 0
      in step ``t``'s forward pass (the units that pass no gradient for that sample);
    * ``update_ratio[t][l]``: ``||W_after - W_before|| / ||W_before||`` for the weight of the
      ``l``-th weighted layer (Frobenius norms): the size of the SGD update (learning rate
      times gradient with momentum) relative to the weights;

    and at the steps in ``snapshot_steps`` (counted from 0) the values themselves, as float64
    NumPy arrays of the layer's shape: ``inputs[t][l]``, the input of ReLU ``l`` (the
    pre-activation), and ``gradients[t][l]``, the gradient of the loss with respect to it.
    Call :meth:`remove` to detach the hooks.
    """

    def __init__(self, model: nn.Module, snapshot_steps: tuple[int, ...] = ()) -> None:
        self.relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
        self.weighted = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        self.snapshot_steps = set(snapshot_steps)
        self.step = 0
        self.zero_fraction: list[list[float]] = []
        self.update_ratio: list[list[float]] = []
        self.inputs: dict[int, list[np.ndarray]] = {}
        self.gradients: dict[int, list[np.ndarray]] = {}
        self._zeros: list[float] = []
        self._hooks = [relu.register_forward_hook(self._forward) for relu in self.relus]
        self._before: list[torch.Tensor] = []

    def _forward(self, module, inputs, output) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return  # evaluation passes are not training steps
        self._zeros.append(float((output == 0).double().mean()))
        if self.step in self.snapshot_steps:
            layer = self.relus.index(module)
            self.inputs.setdefault(self.step, []).append(inputs[0].detach().double().numpy())
            grads = self.gradients.setdefault(self.step, [None] * len(self.relus))

            def keep(grad, layer=layer, grads=grads):
                grads[layer] = grad.detach().double().numpy()

            inputs[0].register_hook(keep)

    def before_step(self) -> None:
        """Called by :func:`train` after ``backward`` and before ``optimizer.step``."""
        self._before = [m.weight.detach().clone() for m in self.weighted]

    def after_step(self) -> None:
        """Called by :func:`train` right after ``optimizer.step``."""
        self.update_ratio.append(
            [
                float((m.weight.detach() - w).norm() / w.norm())
                for m, w in zip(self.weighted, self._before)
            ]
        )
        self.zero_fraction.append(self._zeros[-len(self.relus) :])
        self._zeros = []
        self.step += 1

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()


def activations(model: nn.Sequential, x: torch.Tensor, of: type = nn.ReLU) -> list[torch.Tensor]:
    """The inputs of every ``of`` layer (by default the pre-activations of each ReLU) for ``x``.

    Runs ``model`` on ``x`` without gradients and in the model's current mode; returns one
    tensor per matching layer, in order.
    """
    found: list[torch.Tensor] = []
    hooks = [
        m.register_forward_hook(lambda module, inputs, output: found.append(inputs[0].detach()))
        for m in model.modules()
        if isinstance(m, of)
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return found
