"""bncourse.training: the digits split, the models, the training loop and its helpers.

Tolerances: the models run in float64 (``training.DTYPE``); comparisons between two
computations of the same function in a different order (a BatchNorm layer folded into the
Linear before it) use ``atol=1e-5`` on outputs of size ~1-10, a bound that float32 would meet
too and float64 meets with room to spare; reproducibility is checked bit for bit (same seed,
same thread count), and across thread counts and perturbed weights to the printed digit.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from bncourse import training


@pytest.fixture(autouse=True)
def one_thread():
    """Bitwise reproducibility needs one thread (the order of additions then never changes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    return training.load_digits()


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
def test_digits_shapes_types_and_range(data):
    assert data.train_x.shape == (1258, 1, 8, 8) and data.test_x.shape == (539, 1, 8, 8)
    assert (
        data.train_x.dtype == training.DTYPE == torch.float64 and data.train_y.dtype == torch.int64
    )
    assert data.train_y.shape == (1258,) and data.test_y.shape == (539,)
    for x in (data.train_x, data.test_x):
        assert x.min() == 0.0 and x.max() == 1.0
    assert set(data.train_y.tolist()) == set(data.test_y.tolist()) == set(range(10))


def test_digits_split_is_disjoint_complete_and_stratified(data):
    from sklearn.datasets import load_digits

    images = torch.from_numpy(load_digits().images.astype("float64") / 16).flatten(1)
    labels = torch.from_numpy(load_digits().target)
    # Every image lands in exactly one of the two sets (images can repeat, so compare counts).
    together = torch.cat([data.train_x.flatten(1), data.test_x.flatten(1)])
    assert len(together) == len(images) == 1797
    assert torch.equal(torch.sort(together.sum(1)).values, torch.sort(images.sum(1)).values)
    for digit in range(10):
        total = int((labels == digit).sum())
        assert int((data.test_y == digit).sum()) == round(0.3 * total)


def test_digits_split_depends_only_on_the_seed():
    a, b, c = (
        training.load_digits(seed=0),
        training.load_digits(seed=0),
        training.load_digits(seed=1),
    )
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.train_y, b.train_y)
    assert not torch.equal(a.test_x, c.test_x)


# --------------------------------------------------------------------------------------------
# Models and initialisation
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("norm", training.NORMS)
def test_every_model_maps_images_to_ten_logits(kind, norm):
    model = training.make_model(kind, norm)
    assert model(torch.rand(5, 1, 8, 8, dtype=training.DTYPE)).shape == (5, 10)


@pytest.mark.parametrize(
    "kind, norm, expected",
    [
        ("mlp", "batch", nn.BatchNorm1d),
        ("mlp", "layer", nn.LayerNorm),
        ("mlp", "group", nn.GroupNorm),
        ("cnn", "batch", nn.BatchNorm2d),
        ("cnn", "layer", nn.GroupNorm),
        ("cnn", "group", nn.GroupNorm),
    ],
)
def test_one_normalization_before_every_relu(kind, norm, expected):
    layers = list(training.make_model(kind, norm))
    relus = [i for i, layer in enumerate(layers) if isinstance(layer, nn.ReLU)]
    assert len(relus) == (4 if kind == "mlp" else 2)
    for i in relus:
        assert isinstance(layers[i - 1], expected) and isinstance(
            layers[i - 2], (nn.Linear, nn.Conv2d)
        )
    if kind == "cnn" and norm == "layer":
        assert all(layers[i - 1].num_groups == 1 for i in relus)


def test_norm_after_activation_moves_it_behind_the_relu():
    layers = list(training.mlp("batch", norm_after_activation=True))
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.BatchNorm1d):
            assert isinstance(layers[i - 1], nn.ReLU) and isinstance(layers[i - 2], nn.Linear)


def test_unknown_names_are_errors():
    with pytest.raises(ValueError, match="norm should be one of"):
        training.mlp("instance")
    with pytest.raises(ValueError, match="kind should be 'mlp' or 'cnn'"):
        training.make_model("resnet")


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0])
def test_init_is_he_normal_times_scale(scale):
    """4096 weights per hidden layer: their std is within 5% of the target (its sampling error
    is about 1/sqrt(2 * 4096) = 1.1%); biases are 0 and BatchNorm keeps gamma=1, beta=0."""
    model = training.make_model("mlp", "batch", init_scale=scale, seed=3)
    for layer in model:
        if isinstance(layer, nn.Linear):
            target = scale * math.sqrt(2 / layer.in_features)
            assert float(layer.weight.detach().std()) == pytest.approx(target, rel=0.05)
            assert torch.count_nonzero(layer.bias) == 0
        if isinstance(layer, nn.BatchNorm1d):
            assert torch.equal(layer.weight, torch.ones(64)) and torch.equal(
                layer.bias, torch.zeros(64)
            )


def test_init_depends_only_on_the_seed():
    a, b, c = (training.make_model("cnn", "batch", seed=s) for s in (0, 0, 1))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a[0].weight, c[0].weight)


# --------------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------------
def test_training_is_reproducible_bit_for_bit(data):
    runs = []
    for _ in range(2):
        model = training.make_model("mlp", "batch", seed=0)
        history = training.train(model, data, epochs=2, batch_size=64, lr=0.1, seed=5)
        runs.append((history, model.state_dict()))
    (h1, s1), (h2, s2) = runs
    assert h1.step_loss == h2.step_loss and h1.test_accuracy == h2.test_accuracy
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    other = training.train(
        training.make_model("mlp", "batch", seed=0), data, epochs=2, batch_size=64, lr=0.1, seed=6
    )
    assert other.step_loss != h1.step_loss


@pytest.mark.parametrize("threads, relative", [(2, 0.0), (1, 1e-12)])
def test_training_prints_the_same_with_other_sums_or_last_bits(data, threads, relative):
    """What another CPU changes: the order of additions (here: the thread count) or the last
    bits (here: every initial weight times 1 + 1e-12 noise, 10^4 float64 ulps). Neither moves
    a test accuracy of a run that float32 would move by several points (chapter 7, "Why
    float64"), at any digit."""

    def accuracies() -> list[float]:
        model = training.perturb(training.make_model("mlp", "none", seed=0), relative, seed=1)
        return training.train(model, data, epochs=3, batch_size=32, lr=0.1, seed=0).test_accuracy

    reference = accuracies()
    torch.set_num_threads(threads)
    assert accuracies() == reference


def test_perturb_changes_every_weight_by_the_relative_amount():
    model = training.make_model("mlp", "batch", seed=0)
    original = copy.deepcopy(model)
    training.perturb(model, 1e-7, seed=1)
    for p, q in zip(model.parameters(), original.parameters()):
        p, q = p.detach(), q.detach()
        nonzero = q != 0
        assert torch.equal(p[~nonzero], q[~nonzero]), "zeros (the biases) stay zero"
        if nonzero.any():
            ratio = (p[nonzero] / q[nonzero] - 1).abs()
            assert 0 < float(ratio.max()) < 1e-6 and float(ratio.median()) > 1e-8


def test_training_learns_and_records_every_step(data):
    model = training.make_model("cnn", "batch", seed=0)
    history = training.train(model, data, epochs=2, batch_size=32, lr=0.1)
    assert len(history.step_loss) == 2 * (1258 // 32)  # the last partial batch is dropped
    assert len(history.test_accuracy) == len(history.test_loss) == 2
    assert history.final_accuracy > 0.8 and not history.diverged
    assert model.training


def test_divergence_stops_training_and_pads_the_history(data):
    model = training.make_model("mlp", "none", init_scale=10.0)
    history = training.train(
        model, data, epochs=3, batch_size=32, lr=10.0
    )  # float64 overflows late
    assert history.diverged
    assert len(history.step_loss) < 3 * (1258 // 32)
    assert history.test_accuracy == [0.1, 0.1, 0.1] and all(
        math.isnan(v) for v in history.test_loss
    )


def fold_batchnorm(model: nn.Sequential) -> nn.Sequential:
    """The same network with each eval-mode BatchNorm1d folded into the Linear before it."""
    folded = copy.deepcopy(model)
    layers = list(folded)
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.BatchNorm1d):
            linear = layers[i - 1]
            scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
            with torch.no_grad():
                linear.weight.mul_(scale[:, None])
                linear.bias.copy_(scale * (linear.bias - layer.running_mean) + layer.bias)
            layers[i] = nn.Identity()
    return nn.Sequential(*layers)


def test_batchnorm_in_eval_mode_is_the_folded_affine_map(data):
    model = training.make_model("mlp", "batch", seed=0)
    training.train(model, data, epochs=1, batch_size=32, lr=0.1)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(data.test_x), fold_batchnorm(model)(data.test_x), atol=1e-5)
        # ... and in training mode it is not (batch statistics differ from running ones)
        assert not torch.allclose(
            model.train()(data.test_x[:8]), fold_batchnorm(model)(data.test_x[:8]), atol=1e-2
        )


def test_evaluate_never_changes_the_model(data):
    model = training.make_model("mlp", "batch", seed=0)
    training.train(model, data, epochs=1, batch_size=32, lr=0.1)
    before = copy.deepcopy(model.state_dict())
    loss, accuracy = training.evaluate(
        model, data.test_x, data.test_y, train_mode=True, batch_size=2
    )
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert 0.0 <= accuracy <= 1.0 and loss > 0
    model.eval()
    logits = model(data.test_x)
    expected = float((logits.argmax(1) == data.test_y).float().mean())
    assert training.evaluate(model, data.test_x, data.test_y)[1] == pytest.approx(expected)
    assert not model.training


def test_evaluate_in_train_mode_uses_the_batch_statistics(data):
    """A batch that holds one digit only is normalized with that digit's statistics."""
    model = training.make_model("mlp", "batch", seed=0)
    training.train(model, data, epochs=2, batch_size=32, lr=0.1)
    order = torch.argsort(data.test_y, stable=True)
    mixed = training.evaluate(model, data.test_x, data.test_y, train_mode=True)[1]
    by_digit = training.evaluate(
        model, data.test_x[order], data.test_y[order], train_mode=True, batch_size=32
    )[1]
    assert mixed > 0.8 and by_digit < 0.5


def test_freeze_batchnorm_keeps_statistics_and_parameters(data):
    model = training.make_model("mlp", "batch", seed=0)
    training.train(model, data, epochs=1, batch_size=32, lr=0.1)
    before = copy.deepcopy(model.state_dict())
    training.train(model, data, epochs=1, batch_size=4, lr=0.01, frozen_batchnorm=True)
    after = model.state_dict()
    for key in before:
        if key.startswith(("2.", "5.", "8.", "11.")):  # the BatchNorm layers
            assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["1.weight"], after["1.weight"])


def test_activations_are_the_relu_inputs():
    model = training.make_model("mlp", "batch", seed=0)
    found = training.activations(model, torch.rand(50, 1, 8, 8, dtype=training.DTYPE))
    assert len(found) == 4 and all(a.shape == (50, 64) for a in found)
    for a in found:  # training mode, gamma = 1, beta = 0: each feature standardized
        assert torch.allclose(a.mean(0), torch.zeros_like(a[0]), atol=1e-5)
        assert torch.allclose(a.var(0, unbiased=False), torch.ones_like(a[0]), atol=1e-3)
    assert not any(m._forward_hooks for m in model.modules()), "hooks are removed"


# --------------------------------------------------------------------------------------------
# Steps, matched training loss, re-estimated statistics, noisy BatchNorm, diagnostics
# --------------------------------------------------------------------------------------------
def test_steps_overrides_epochs_and_stops_mid_epoch(data):
    model = training.make_model("mlp", "none", seed=0)
    history = training.train(model, data, epochs=1, steps=50, batch_size=32, lr=0.01)
    # 39 steps per epoch: 50 steps are one full epoch and 11 of the next, each evaluated
    assert len(history.step_loss) == 50 and len(history.test_accuracy) == 2
    again = training.make_model("mlp", "none", seed=0)
    first = training.train(again, data, epochs=2, batch_size=32, lr=0.01)
    assert first.step_loss[:50] == history.step_loss, "the same steps, stopped earlier"


def test_stop_at_train_loss_stops_at_the_first_epoch_at_or_below_it(data):
    model = training.make_model("mlp", "batch", seed=0)
    history = training.train(model, data, epochs=30, lr=0.05, stop_at_train_loss=0.1)
    losses = history.train_loss
    assert losses[-1] <= 0.1 and all(loss > 0.1 for loss in losses[:-1])
    assert len(losses) == len(history.test_loss) < 30
    assert losses[-1] == training.evaluate(model, data.train_x, data.train_y)[0]
    assert training.train(model, data, epochs=1).train_loss == [], "recorded only when asked"


def test_recompute_batchnorm_statistics_is_the_plain_average_and_keeps_the_rest(data):
    model = training.make_model("mlp", "batch", seed=0)
    training.train(model, data, epochs=1, lr=0.1)
    model.eval()
    before = copy.deepcopy(model.state_dict())
    training.recompute_batchnorm_statistics(model, data.train_x[:200], batch_size=64)
    assert not model.training and all(not m.training for m in model.modules()), "modes kept"
    first = training.batchnorm_layers(model)[0]
    assert first.momentum == 0.1 and int(first.num_batches_tracked) == 3  # 200 // 64 batches
    # The first layer's input does not depend on BatchNorm: its running mean must be the
    # average of the 3 batch means of Linear 1's output, its variance that of the unbiased ones.
    with torch.no_grad():
        h = model[1](model[0](data.train_x[:192])).view(3, 64, -1)
    assert torch.allclose(first.running_mean, h.mean(1).mean(0), atol=1e-12)
    assert torch.allclose(first.running_var, h.var(1, unbiased=True).mean(0), atol=1e-12)
    assert not torch.allclose(before["2.running_mean"], first.running_mean, atol=1e-6)
    for key, value in model.state_dict().items():
        if "running" not in key and "num_batches" not in key:
            assert torch.equal(value, before[key]), key


def test_recompute_batchnorm_statistics_repairs_lagging_statistics(data):
    model = training.make_model("mlp", "batch", seed=0)
    for layer in training.batchnorm_layers(model):
        layer.momentum = 0.01  # after one epoch the running statistics are mostly the initial ones
    training.train(model, data, epochs=1, lr=0.1)
    lagging = training.evaluate(model, data.test_x, data.test_y)[1]
    training.recompute_batchnorm_statistics(model, data.train_x)
    assert training.evaluate(model, data.test_x, data.test_y)[1] > lagging + 0.2


def test_after_epoch_sees_every_checkpoint_and_changes_nothing(data):
    seen = []
    model = training.make_model("mlp", "batch", seed=0)
    history = training.train(
        model,
        data,
        epochs=3,
        lr=0.1,
        after_epoch=lambda m: seen.append(copy.deepcopy(m.state_dict())),
    )
    plain = training.make_model("mlp", "batch", seed=0)
    assert history.test_accuracy == training.train(plain, data, epochs=3, lr=0.1).test_accuracy
    assert len(seen) == 3 and not torch.equal(seen[0]["1.weight"], seen[2]["1.weight"])
    for key, value in plain.state_dict().items():
        assert torch.equal(seen[-1][key], value), key


def test_accuracy_per_epoch_re_estimates_each_checkpoint_on_a_copy(data):
    model = training.make_model("mlp", "batch", seed=0)
    for layer in training.batchnorm_layers(model):
        layer.momentum = 0.01  # lagging statistics: re-estimating them must change the result
    as_trained, recomputed = training.accuracy_per_epoch(model, data, epochs=2, lr=0.1)
    assert len(as_trained) == len(recomputed) == 2
    assert as_trained[-1] == training.evaluate(model, data.test_x, data.test_y)[1]
    assert training.batchnorm_layers(model)[0].momentum == 0.01, "the model's own layers kept"
    copied = training.recompute_batchnorm_statistics(copy.deepcopy(model), data.train_x)
    assert recomputed[-1] == training.evaluate(copied, data.test_x, data.test_y)[1]
    assert recomputed[0] > as_trained[0] + 0.2


def test_shift_noise_changes_mean_and_scale_per_step_and_channel_only_in_training():
    noise = training.ShiftNoise(shift=1.0, scale=2.0, seed=0)
    x = torch.randn(500, 3, 4, dtype=torch.float64)
    first, second = noise(x), noise(x)
    for y in (first, second):  # y = s * x + mu per channel: s, mu are the same for every value
        s = (y[1:] - y[:1]) / (x[1:] - x[:1])
        assert torch.allclose(s, s[:1, :, :1].expand_as(s), rtol=1e-9)
        assert ((s[0, :, 0] >= 0.5) & (s[0, :, 0] <= 2.0)).all()
        mu = y - s[:1, :, :1] * x
        assert (mu.abs() <= 1.0).all()
    assert not torch.allclose(first, second), "new draws at every step"
    assert torch.equal(noise.eval()(x), x), "the identity in eval mode"
    again = training.ShiftNoise(shift=1.0, scale=2.0, seed=0)
    assert torch.equal(again(x), first), "seeded"


def test_noisy_batchnorm_puts_noise_after_every_batchnorm_only():
    model = training.make_model("mlp", "batch", seed=0)
    noisy = training.noisy_batchnorm(model, 0.5, 1.5, seed=3)
    kinds = [type(m).__name__ for m in noisy]
    assert kinds.count("ShiftNoise") == 4 and len(noisy) == len(model) + 4
    for i, kind in enumerate(kinds):
        assert (kind == "ShiftNoise") == (i > 0 and kinds[i - 1] == "BatchNorm1d")
    x = torch.rand(10, 1, 8, 8, dtype=training.DTYPE)
    assert torch.equal(noisy.eval()(x), model.eval()(x)), "a copy with the same weights"
    plain = training.make_model("mlp", "none", seed=0)
    assert len(training.noisy_batchnorm(plain)) == len(plain), "no BatchNorm, no noise"


def test_diagnostics_record_zero_fractions_update_ratios_and_snapshots(data):
    model = training.make_model("mlp", "batch", seed=0)
    start = [m.weight.detach().clone() for m in model if isinstance(m, nn.Linear)]
    monitor = training.Diagnostics(model, snapshot_steps=(0, 2))
    history = training.train(model, data, steps=3, batch_size=32, lr=0.1, monitor=monitor)
    monitor.remove()
    assert len(monitor.zero_fraction) == len(monitor.update_ratio) == len(history.step_loss) == 3
    assert all(len(z) == 4 for z in monitor.zero_fraction), "one per ReLU"
    assert all(len(r) == 5 for r in monitor.update_ratio), "one per Linear, the output included"
    assert sorted(monitor.inputs) == sorted(monitor.gradients) == [0, 2]
    # Step 0 is the untrained model: check against a forward/backward done by hand.
    fresh = training.make_model("mlp", "batch", seed=0)
    order = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(0))[:32]
    pre = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: pre.append(i[0]))
        for m in fresh
        if isinstance(m, nn.ReLU)
    ]
    loss = nn.functional.cross_entropy(fresh(data.train_x[order]), data.train_y[order])
    for h in hooks:
        h.remove()
    for p in pre:
        p.retain_grad()
    loss.backward()
    for layer, p in enumerate(pre):
        assert np.array_equal(monitor.inputs[0][layer], p.detach().numpy())
        assert np.array_equal(monitor.gradients[0][layer], p.grad.numpy())
        assert monitor.zero_fraction[0][layer] == pytest.approx(float((p <= 0).double().mean()))
    # Update ratio of step 0: SGD's first step is lr * gradient (no momentum yet).
    grads = [m.weight.grad for m in fresh if isinstance(m, nn.Linear)]
    for layer, (w, g) in enumerate(zip(start, grads)):
        assert monitor.update_ratio[0][layer] == pytest.approx(float(0.1 * g.norm() / w.norm()))
    assert not any(m._forward_hooks for m in model.modules()), "hooks are removed"
