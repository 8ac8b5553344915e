"""The engine learns: retrieval on unseen classes after a short CPU run, against the untrained network
and raw L2-normalised pixels (MAP@R is the figure to beat: R@1 saturates on these sets)."""

from __future__ import annotations

import pytest
import torch
from conftest import require

pytestmark = pytest.mark.timeout(600)

# Margins from benchmarks/learning.py. fashion-mnist recipe hybrid (k = 16, tiny_spatial), seed 0: unseen-class
# MAP@R 0.4845 vs raw pixels 0.4706 (+0.014) and the untrained network 0.464 (+0.020). digits:
# training-class MAP@R +0.035 (seeds 0-2); unseen classes ~ untrained.
PIXEL_MARGIN = 0.005
UNTRAINED_MARGIN = 0.01
LEARN_MARGIN = 0.015
REG_GAP = 0.1  # regulariser's last fifth, k=4 minus the recipe's k=16 (measured 0.53 - 0.36)


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(min(2, n))
    yield
    torch.set_num_threads(n)


def _baselines(cfg):
    """(raw L2-normalised pixels, untrained network) metrics on the run's test split."""
    from ctxsim.eval import evaluate_bundle, retrieval_metrics
    from ctxsim.train.build import build_run_data, build_run_model, seed_everything

    data = build_run_data(cfg)
    x = data.query.images.flatten(1).float()  # the uint8 test images, as stored
    labels = torch.as_tensor(data.query.labels)
    raw = retrieval_metrics(torch.nn.functional.normalize(x, dim=1), labels, ks=data.ks)
    seed_everything(cfg.seed)  # the same initial weights as fit() builds
    untrained = evaluate_bundle(build_run_model(cfg, data.in_channels), data, "cpu", batch_size=512)
    return raw, untrained


def _fashion_available() -> bool:
    try:
        from ctxsim.data.small import find_fashion_dir

        find_fashion_dir()
        return True
    except Exception:
        return False


@pytest.mark.slow
def test_fashion_mnist_hybrid_beats_raw_pixels_and_the_untrained_network():
    """Unseen classes 5-9 (5,000 t10k images), MAP@R: the trained recipe beats both raw L2-normalised pixels
    (the issue's figures R@1 0.908, MAP@R 0.471, reproduced) and the untrained network of the same seed."""
    require(_fashion_available(), "fashion-mnist files are missing (apt-get install dataset-fashion-mnist)")
    from ctxsim.train import fit, recipe

    cfg = recipe("fashion-mnist", "hybrid", 256).with_overrides(device="cpu", seed=0, num_workers=0)
    raw, untrained = _baselines(cfg)
    assert raw["MAP@R"] == pytest.approx(0.4706, abs=2e-3)
    assert raw["R@1"] == pytest.approx(0.908, abs=2e-3)
    res = fit(cfg)
    m = res.metrics["MAP@R"]
    # measured (seed 0): 0.4845 vs raw 0.4706 and untrained 0.464; seeds 0-2 average 0.478 (seed 2
    # 0.469, just below raw pixels): the README says so, and these margins claim no more than seed 0 shows
    assert m > raw["MAP@R"] + PIXEL_MARGIN, (res.metrics, raw)
    assert m > untrained["MAP@R"] + UNTRAINED_MARGIN, (res.metrics, untrained)
    assert res.metrics["R@1"] > raw["R@1"] + 0.02, (res.metrics, raw)


def _fifths(sink, key: str) -> list[float]:
    """Mean of a step quantity ("loss" or a loss term) over each fifth of the run's steps."""
    steps = [e.data for e in sink.events if e.kind == "step"]
    vals = [d["loss"] if key == "loss" else d["terms"][key] for d in steps]
    n = len(vals) // 5
    return [sum(vals[i * n:(i + 1) * n]) / n for i in range(5)]


@pytest.mark.slow
def test_fashion_mnist_rising_loss_diagnosis():
    """Issue 16's diagnosis, pinned (seed 0; measured values in the comments). The recipe (k = 16, the
    samples per class) trains with a falling loss and less collapse; with the previous k=4 the run
    collapses (regulariser (mean cos - 0.25)^2 -> 0.53, mean cosine 0.98) and its loss rises
    (0.264 -> 0.360), because 12 of each anchor's 15 positives can never be among its 4 neighbours
    (tests/test_losses_contextual.py, benchmarks/ctx_drift.py). Centring the contextual gradient
    removes that collapse but not the rise; BatchNorm batch statistics make that loss fall."""
    require(_fashion_available(), "fashion-mnist files are missing (apt-get install dataset-fashion-mnist)")
    from ctxsim.train import fit
    from ctxsim.train.configure import configure
    from ctxsim.train.events import ListSink

    def run(*sets):
        sink = ListSink()
        fit(configure("fashion-mnist", "hybrid", 256, sets=["device=cpu", "num_workers=0", *sets], seed=0), sink=sink)
        return sink

    recipe_run = run()
    loss = _fifths(recipe_run, "loss")
    assert loss[-1] < loss[0] - 0.01, loss  # the loss falls
    k4 = run("loss.k=4")
    assert _fifths(k4, "reg")[-1] > 0.4 and _fifths(k4, "loss")[-1] > _fifths(k4, "loss")[0]
    # less drift with k = 16 (regulariser's last fifth measured 0.36 vs 0.53), not none
    assert _fifths(recipe_run, "reg")[-1] < _fifths(k4, "reg")[-1] - REG_GAP
    centred = run("loss.k=4", "loss.ctx_center_grad=true")
    assert max(_fifths(centred, "reg")) < 0.1
    bn_batch = _fifths(run("loss.k=4", "model.bn_mode=none"), "loss")
    assert bn_batch[-1] < bn_batch[0] - 0.01, bn_batch  # the loss falls


@pytest.mark.slow
def test_digits_hybrid_fits_its_training_classes_without_losing_the_unseen_ones(tmp_path):
    """digits (seconds): retrieval among the training classes 0-4 (un-augmented images) rises above the
    untrained network's, and the unseen digits 5-9 stay near the untrained/raw-pixel level (measured:
    0.60-0.61 vs untrained 0.61-0.62; the old globally pooled recipe collapsed them to ~0.3)."""
    from types import SimpleNamespace

    from ctxsim.data import build_data
    from ctxsim.eval import evaluate_bundle
    from ctxsim.train import fit, load_checkpoint_model, recipe
    from ctxsim.train.build import build_run_model, seed_everything

    cfg = recipe("digits", "hybrid", 256).with_overrides(device="cpu", seed=0, num_workers=0)
    plain = build_data("digits", augment=False)
    seen = SimpleNamespace(query=plain.train, gallery=None, ks=plain.ks)
    seed_everything(cfg.seed)
    before = evaluate_bundle(build_run_model(cfg, plain.in_channels), seen, "cpu", batch_size=512)
    _, untrained = _baselines(cfg)
    res = fit(cfg, run_dir=tmp_path)
    assert res.status == "done"
    model, _ = load_checkpoint_model(tmp_path / "checkpoint.pt")
    after = evaluate_bundle(model, seen, "cpu", batch_size=512)
    assert after["MAP@R"] > before["MAP@R"] + LEARN_MARGIN, (before, after)
    assert after["R@1"] > 0.95, after
    assert res.metrics["MAP@R"] > untrained["MAP@R"] - 0.05, (res.metrics, untrained)
    assert res.metrics["MAP@R"] > 0.5, res.metrics


def test_tiny_spatial_trunk_shapes():
    """tiny_spatial: a 4x4 conv grid (64 channels) + a 14x14 pixel path, flattened; any input size from 4x4."""
    from ctxsim.models import build_model

    torch.manual_seed(0)
    model = build_model("tiny_spatial", pooling="avg", embedding_size=16, in_channels=1, bn_mode="eval_stats").eval()
    assert model.feature_dim == 64 * 16 + 196
    for size in (8, 28):
        with torch.no_grad():
            out = model(torch.randn(3, 1, size, size))
        assert out.shape == (3, 16)
        assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)


def test_centred_contextual_gradient_float64():
    """``ctx_center_grad`` (off by default): the contextual term's value is unchanged and its gradient on
    the similarity matrix loses exactly its off-diagonal mean, which for the plain (reference) gradient is
    a net pull of every similarity upwards. Off, the hybrid loss is the reference-exact one."""
    from ctxsim.losses import build_loss
    from ctxsim.losses._base import label_matrix
    from ctxsim.losses.contextual import center_grad, contextual_similarity, contextual_term

    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(24, 8, generator=g, dtype=torch.float64), dim=1)
    labels = torch.arange(6).repeat_interleave(4)
    W = label_matrix(labels).to(torch.float64)
    off = ~torch.eye(24, dtype=torch.bool)

    def grad(centred: bool):
        S = (emb @ emb.T).requires_grad_(True)
        L = contextual_term(contextual_similarity(center_grad(S) if centred else S, 4, 0.05), W)
        L.backward()
        return L.detach(), S.grad

    l0, g0 = grad(False)
    l1, g1 = grad(True)
    assert l1 == l0
    assert g0[off].sum() < -1e-3  # the drift: the plain gradient's descent step raises all similarities
    assert torch.allclose(g1[off], g0[off] - g0[off].mean(), atol=1e-14, rtol=0)
    assert abs(float(g1[off].sum())) < 1e-12 and torch.equal(g1.diagonal(), g0.diagonal())

    x = torch.randn(24, 16, generator=g, dtype=torch.float64)
    outs = []
    for kw in ({}, {"ctx_center_grad": False}, {"ctx_center_grad": True}):
        e = x.clone().requires_grad_(True)
        loss = build_loss("hybrid", convention="256", **kw)
        value = loss(e, labels)
        value.backward()
        outs.append((value.detach(), e.grad))
    assert outs[0][0] == outs[1][0] == outs[2][0] and torch.equal(outs[0][1], outs[1][1])
    assert not torch.allclose(outs[0][1], outs[2][1])
    assert "ctx_center_grad" not in build_loss("hybrid").hparams()
