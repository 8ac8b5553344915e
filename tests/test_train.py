"""The training engine: every loss trains on synthetic data in both recipe families, one ResNet-50 step
per family, optimizer groups and schedules, warm-up, selection, failure events, checkpoints, and
interrupt-and-resume equality (deterministic, CPU)."""

from __future__ import annotations

import math

import pytest
import torch

from ctxsim.errors import ConfigError
from ctxsim.train import RunConfig, fit, load_checkpoint_model, recipe
from ctxsim.train.checkpoint import load_checkpoint
from ctxsim.train.events import ListSink, metric_points
from ctxsim.train.recipes import LOSS_NAMES

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_thread")]


def tiny(loss: str = "hybrid", resolution: int = 256, **over) -> RunConfig:
    """A synthetic-data run of a few steps on CPU."""
    base = dict(epochs=1, max_steps_per_epoch=2, device="cpu", deterministic=True, num_workers=0)
    base.update(over)
    return recipe("synthetic", loss, resolution).with_overrides(**base)


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("resolution", [224, 256])
@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_every_loss_trains_a_few_steps(loss, resolution, tmp_path):
    cfg = tiny(loss, resolution)
    if resolution == 224:  # the 224 variant trains through the linear bottleneck (loss space != eval space)
        cfg = cfg.with_overrides(model={"bottleneck": "linear", "bottleneck_size": 48})
    sink = ListSink()
    res = fit(cfg, sink=sink, run_dir=tmp_path)
    assert res.status == "done" and res.steps == 2 and res.epochs_completed == 1
    steps = sink.of("step")
    assert len(steps) == 2
    for e in steps:
        assert math.isfinite(e.data["loss"]) and e.data["lr"] > 0 and e.data["images_per_s"] > 0
        assert e.data["terms"], "loss.last_terms must name the loss terms"
        keys = {k for k, _, _ in metric_points(e)}
        assert "train/loss" in keys and all(f"train/{t}" in keys for t in e.data["terms"])
    assert set(res.metrics) >= {"R@1", "R@2", "R@4", "R@8", "MAP@R"}
    kinds = [e.kind for e in sink.events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("eval") == 1 and kinds.count("checkpoint") == 1
    # the model really changed: the checkpoint's weights differ from a fresh model's
    fresh = tiny(loss, resolution)
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ck["config"]["loss"] == loss
    model, _ = load_checkpoint_model(tmp_path / "checkpoint.pt")
    assert model.embedding.weight.shape[0] == fresh.model.embedding_size


@pytest.mark.parametrize("family", [("cub", 224), ("cub", 256), ("sop", 256)])
def test_resnet50_step_per_recipe_family(family, tmp_path):
    """One real ResNet-50 step (random init, 32x32 synthetic images) with each family's model/optimizer."""
    dataset, res = family
    paper = recipe(dataset, "hybrid", res)
    cfg = paper.with_overrides(
        dataset="synthetic", xform_scale=None, sampler="m_per_class", sampler_kw={}, batch_size=16,
        samples_per_class=4, epochs=1, max_steps_per_epoch=1, device="cpu", num_workers=0, eval_batch_size=64,
        model={"backbone_weights": None}, data_kw={"images_per_class": 4, "test_images_per_class": 2},
    )
    sink = ListSink()
    res_ = fit(cfg, sink=sink, run_dir=tmp_path)
    assert res_.status == "done" and res_.steps == 1
    assert math.isfinite(sink.of("step")[0].data["loss"])
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    n_opt = len(ck["optim"]["optimizers"])
    assert n_opt == (1 if res == 224 else 2)  # 224: one AdamW; 256: backbone Adam + head Adam


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_optimizer_groups_224_and_256():
    from ctxsim.losses import build_loss
    from ctxsim.models import build_model
    from ctxsim.train.optim import build_optimizers

    model = build_model(arch="tiny", pooling="avg", embedding_size=16, bottleneck="linear", bottleneck_size=32,
                        in_channels=1)
    loss = build_loss("proxy_anchor", num_classes=5, embedding_size=32)
    c224 = recipe("cub", "proxy_anchor", 224).with_overrides(lr=1e-4)
    opts = build_optimizers(c224, model, loss)
    assert len(opts.optimizers) == 1 and isinstance(opts.optimizers[0], torch.optim.AdamW)
    groups = {g["name"]: g for g in opts.optimizers[0].param_groups}
    assert {k: g["lr"] for k, g in groups.items()} == pytest.approx(
        {"backbone": 1e-4, "embedding": 1e-4, "bottleneck": 2e-4, "proxies": 1e-2})
    assert all(g["weight_decay"] == 1e-4 for g in groups.values())
    sched = opts.schedulers[0]
    assert isinstance(sched, torch.optim.lr_scheduler.StepLR) and sched.step_size == 10 and sched.gamma == 0.3

    c256 = recipe("cub", "proxy_nca", 256).with_overrides(lr=8e-5)
    model256 = build_model(arch="tiny", pooling="max", layernorm=True, embedding_size=16, in_channels=1)
    loss256 = build_loss("proxy_nca", num_classes=5, embedding_size=16)
    o = build_optimizers(c256, model256, loss256)
    assert o.names == ["backbone", "head", "proxies"]
    assert all(type(x) is torch.optim.Adam for x in o.optimizers)
    assert [x.param_groups[0]["lr"] for x in o.optimizers] == pytest.approx([4e-5, 8e-5, 1e-3])
    assert o.schedulers[2] is None and o.proxy_index == 2  # --loss_lr Adam is not scheduled
    for _ in range(15):
        o.schedule_step()
    assert o.optimizers[1].param_groups[0]["lr"] == pytest.approx(8e-5 * 0.3)  # MultiStepLR milestone 15
    assert o.optimizers[2].param_groups[0]["lr"] == pytest.approx(1e-3)
    # every model parameter is in exactly one group
    ids = [id(p) for x in o.optimizers for g in x.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model256.parameters())) + len(list(loss256.parameters()))


def test_proxy_grad_accumulate_flag_keeps_proxy_grads():
    from ctxsim.train.optim import OptimizerSet

    p, q = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    p.grad, q.grad = torch.ones(2), torch.ones(2)
    s = OptimizerSet(["head", "proxies"], [torch.optim.Adam([p]), torch.optim.Adam([q])], [None, None], proxy_index=1)
    s.zero_grad(accumulate_proxies=True)
    assert p.grad is None and q.grad is not None  # reference-implementation §9.5, only behind the flag
    s.zero_grad()
    assert q.grad is None


def test_warmup_freezes_all_but_embedding(tmp_path):
    cfg = tiny("hybrid", 224, warm=1, epochs=2)
    # stop before the first step: the checkpoint then holds the initial weights
    first = fit(cfg, run_dir=tmp_path, should_stop=lambda: True)
    assert first.status == "stopped" and first.steps == 0
    init = load_checkpoint(tmp_path / "checkpoint.pt")["model"]
    calls = {"n": 0}

    def stop_after_epoch_1():
        calls["n"] += 1
        return calls["n"] > 2  # 2 steps per epoch: stop at the start of epoch 2

    fit(cfg, run_dir=tmp_path, should_stop=stop_after_epoch_1)
    after = load_checkpoint(tmp_path / "checkpoint.pt")
    assert after["epoch"] == 1
    w = after["model"]
    assert torch.equal(w["backbone.stage1.0.weight"], init["backbone.stage1.0.weight"])  # frozen in warm-up
    assert not torch.equal(w["embedding.weight"], init["embedding.weight"])
    res = fit(cfg, run_dir=tmp_path)  # epoch 2: everything trains
    final = load_checkpoint(tmp_path / "checkpoint.pt")["model"]
    assert res.status == "done" and not torch.equal(final["backbone.stage1.0.weight"], init["backbone.stage1.0.weight"])


def _run(cfg, run_dir, should_stop=None):
    sink = ListSink()
    return fit(cfg, sink=sink, run_dir=run_dir, should_stop=should_stop), sink


@pytest.mark.parametrize("stop_at", [5, 8])  # mid-epoch 2, and exactly at the epoch 2/3 boundary
def test_interrupt_and_resume_equals_uninterrupted(tmp_path, stop_at):
    # 3 epochs x 4 steps, augmentation on, proxies in their own Adam: every piece of state must survive
    cfg = recipe("synthetic", "proxy_anchor", 256).with_overrides(
        epochs=3, max_steps_per_epoch=4, eval_every=1, device="cpu", deterministic=True, num_workers=0,
        batch_size=16, proxy_lr=1e-3, data_kw={"augment": True}, select="best")
    full, full_sink = _run(cfg, tmp_path / "a")

    count = {"n": 0}

    def stop():
        count["n"] += 1
        return count["n"] > stop_at

    part, _ = _run(cfg, tmp_path / "b", should_stop=stop)
    assert part.status == "stopped" and part.steps == stop_at
    rest, rest_sink = _run(cfg, tmp_path / "b")
    assert rest.status == "done"
    assert rest_sink.events[0].data["resumed"] and rest_sink.events[0].data["step"] == stop_at
    assert rest.history == full.history  # exactly the same metrics at every evaluation
    assert rest.metrics == full.metrics and rest.best_epoch == full.best_epoch
    losses_full = [e.data["loss"] for e in full_sink.of("step")]
    losses_rest = [e.data["loss"] for e in rest_sink.of("step")]
    assert losses_rest == losses_full[stop_at:]
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["loss"]:
        assert torch.equal(a["loss"][k], b["loss"][k]), k


def test_checkpoint_is_weights_only_and_reloads(tmp_path):
    cfg = tiny("contrastive", 256, epochs=2, eval_every=1, select="best")
    res = fit(cfg, run_dir=tmp_path)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # plain tensors and containers only
    assert ck["epoch"] == 2 and ck["status"] == "done" and len(ck["history"]) == 2
    assert res.selected == "best" and res.selected_on == "test"  # chosen on the test split, and labelled so
    assert res.metrics == res.history[res.best_epoch - 1]["metrics"]
    assert not list(tmp_path.glob("*.tmp"))
    # the saved (selected) model reproduces its metrics
    from ctxsim.data import build_data
    from ctxsim.eval import evaluate_bundle

    model, cfg2 = load_checkpoint_model(tmp_path / "checkpoint.pt")
    assert cfg2 == cfg
    assert evaluate_bundle(model, build_data("synthetic")) == pytest.approx(res.metrics)
    # a completed run is not retrained
    again, sink = _run(cfg, tmp_path)
    assert again.steps == res.steps and not sink.of("step") and sink.of("done")


def test_resume_refuses_a_different_config(tmp_path):
    fit(tiny("hybrid", 256), run_dir=tmp_path)
    with pytest.raises(ConfigError, match="different configuration"):
        fit(tiny("hybrid", 256, lr=0.5), run_dir=tmp_path)
    fit(tiny("hybrid", 256, lr=0.5), run_dir=tmp_path, resume=False)  # explicit fresh start is fine


def test_failure_emits_failed_event_and_reraises(tmp_path):
    sink = ListSink()
    with pytest.raises(ValueError, match="larger than the batch"):
        fit(tiny("hybrid", 256).with_sets(["loss.k=100"]), sink=sink, run_dir=tmp_path)
    failed = sink.of("failed")
    assert len(failed) == 1 and "\n" not in failed[0].data["error"] and "k=100" in failed[0].data["error"]
    assert "Traceback" in failed[0].data["traceback"]
    with pytest.raises(ConfigError, match="has no option"):
        fit(tiny("contrastive", 256).with_sets(["loss.lam=0.3"]))


def test_last_selection_and_eval_schedule(tmp_path):
    sink = ListSink()
    res = fit(tiny("hybrid", 256, epochs=3, eval_every=2, select="last"), sink=sink)
    assert [e.data["epoch"] for e in sink.of("eval")] == [2, 3]  # every 2 epochs + the last one
    done = sink.of("done")[0].data
    assert done["selected"] == "last" and done["selected_on"] is None and done["best_epoch"] == 3
    assert res.metrics == sink.of("eval")[-1].data["metrics"]
