"""The engine learns: retrieval on unseen classes after a short CPU run, against the untrained network
and raw L2-normalised pixels (MAP@R is the figure to beat: R@1 saturates on these sets)."""

from __future__ import annotations

import pytest
import torch

from conftest import require

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# Conservative: measured gains over the untrained network are +0.05..+0.09 MAP@R on fashion-mnist
# (hybrid, seeds 0-2) and +0.4 on the digits training classes; see the README's learning table.
LEARN_MARGIN = 0.03


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(min(2, n))
    yield
    torch.set_num_threads(n)


def _baselines(cfg):
    """(raw L2-normalised pixels, untrained network) metrics on the run's test split."""
    from ctxsim.eval import retrieval_metrics
    from ctxsim.train.engine import build_run_data, build_run_model, evaluate, seed_everything

    data = build_run_data(cfg)
    x = data.query.images.flatten(1).float()  # the uint8 test images, as stored
    labels = torch.as_tensor(data.query.labels)
    raw = retrieval_metrics(torch.nn.functional.normalize(x, dim=1), labels, ks=data.ks)
    seed_everything(cfg.seed)  # the same initial weights as fit() builds
    untrained = evaluate(build_run_model(cfg, data.in_channels), data, "cpu", batch_size=512)
    return raw, untrained


def _fashion_available() -> bool:
    try:
        from ctxsim.data.small import find_fashion_dir

        find_fashion_dir()
        return True
    except Exception:
        return False


def test_fashion_mnist_hybrid_beats_the_untrained_network():
    """Unseen classes 5-9 (5,000 t10k images). Raw pixels stay ahead of this tiny CNN trained on five
    classes (measured: MAP@R 0.40 vs 0.471; the issue hoped for more), so the pixel figure is
    checked as a reproduced baseline and the trained model must clearly beat the untrained one."""
    require(_fashion_available(), "fashion-mnist files are missing (apt-get install dataset-fashion-mnist)")
    from ctxsim.train import fit, recipe

    cfg = recipe("fashion-mnist", "hybrid", 256).with_overrides(device="cpu", seed=0, num_workers=0)
    raw, untrained = _baselines(cfg)
    assert raw["MAP@R"] == pytest.approx(0.4706, abs=2e-3)  # the figures: R@1 0.908, MAP@R 0.471
    assert raw["R@1"] == pytest.approx(0.908, abs=2e-3)
    res = fit(cfg)
    m = res.metrics["MAP@R"]
    assert m > untrained["MAP@R"] + LEARN_MARGIN, (res.metrics, untrained)
    assert res.metrics["RP"] > untrained["RP"] + LEARN_MARGIN, (res.metrics, untrained)


def test_digits_hybrid_fits_its_training_classes(tmp_path):
    """digits (under a minute): retrieval among the training classes 0-4 (un-augmented images) rises far
    above the untrained network's. Transfer to the unseen digits 5-9 is not asserted: with five 8x8
    training classes the trained embedding retrieves them worse than the untrained one (measured)."""
    from types import SimpleNamespace

    from ctxsim.data import build_data
    from ctxsim.train import fit, load_checkpoint_model, recipe
    from ctxsim.train.engine import build_run_model, evaluate, seed_everything

    cfg = recipe("digits", "hybrid", 256).with_overrides(device="cpu", seed=0, num_workers=0)
    plain = build_data("digits", augment=False)
    seen = SimpleNamespace(query=plain.train, gallery=None, ks=plain.ks)
    seed_everything(cfg.seed)
    before = evaluate(build_run_model(cfg, plain.in_channels), seen, "cpu", batch_size=512)
    res = fit(cfg, run_dir=tmp_path)
    assert res.status == "done"
    model, _ = load_checkpoint_model(tmp_path / "checkpoint.pt")
    after = evaluate(model, seen, "cpu", batch_size=512)
    assert after["MAP@R"] > before["MAP@R"] + 0.2, (before, after)
    assert after["R@1"] > 0.9, after
