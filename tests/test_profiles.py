"""Profiles (docs/profiles.md): every switch differs between `reference` and `fixed` exactly where
the table says, and each one changes what the run builds or does."""

from __future__ import annotations

import pytest
import torch

from ctxsim.errors import ConfigError
from ctxsim.train import recipe
from ctxsim.train.build import build_run_data, build_run_loss
from ctxsim.train.config import RunConfig
from ctxsim.train.configure import configure
from ctxsim.train.profiles import SWITCHES, apply_profile, profile_deviations, profile_values, switch_rows

# (dataset, loss, resolution) where the two profiles disagree on this switch
WHERE = {
    "proxies_per_image": ("cub", "proxy_anchor", 224),
    "proxy_grad_accumulate": ("cub", "proxy_nca", 256),
    "jpeg_draft": ("sop", "hybrid", 256),
    "bottleneck_fp32": ("cub", "hybrid", 224),
    "rrc_ratio": ("cars", "hybrid", 256),
    "ks": ("cub", "hybrid", 224),
    "full_map": ("cars", "hybrid", 224),
    "select": ("inat", "hybrid", 256),
}


def test_every_switch_has_a_case():
    assert set(WHERE) == {s.name for s in SWITCHES}


@pytest.mark.parametrize("name", sorted(WHERE))
def test_profiles_differ_exactly_at_the_switch(name):
    dataset, loss, res = WHERE[name]
    ref, fix = recipe(dataset, loss, res, profile="reference"), recipe(dataset, loss, res, profile="fixed")
    field = next(s.field for s in SWITCHES if s.name == name)
    assert getattr(ref, field) != getattr(fix, field)
    # flipping only this switch of the fixed config gives a config that differs from reference only in
    # switches, never in a recipe value
    d_ref, d_fix = ref.to_dict(), fix.to_dict()
    switch_fields = {s.field for s in SWITCHES} | {"profile"}
    assert {k for k in d_ref if d_ref[k] != d_fix[k]} <= switch_fields
    assert ref.config_hash() != fix.config_hash()


def test_default_profile_per_dataset_and_hash():
    assert recipe("cub", "hybrid", 256).profile == "reference"
    assert recipe("synthetic", "hybrid", 256).profile == "fixed"
    c = recipe("synthetic", "hybrid", 256)
    assert c.config_hash() != c.with_overrides(profile="reference").config_hash()


def test_explicit_set_of_a_switch_wins_and_is_recorded():
    c = configure("cub", "proxy_anchor", 224, sets=["proxies_per_image=false"])
    assert c.profile == "reference" and not c.proxies_per_image
    assert profile_deviations(c) == ["proxies_per_image False≠True"]
    assert profile_deviations(configure("cub", "proxy_anchor", 224)) == []
    # a profile given among the --set assignments is resolved first, like --profile
    f = configure("cub", "proxy_anchor", 224, sets=["profile=fixed", "lr=1e-4"])
    assert f.profile == "fixed" and not f.proxies_per_image and f.lr == 1e-4
    with pytest.raises(ConfigError, match="profile must be one of"):
        configure("cub", "hybrid", 256, profile="exact")


def test_switch_rows_list_every_switch():
    rows = switch_rows(recipe("cub", "hybrid", 224))
    assert [r["switch"] for r in rows] == [s.name for s in SWITCHES]
    assert all(r["value"] == r["reference"] and r["why"] for r in rows)


def test_old_config_without_profile_loads_as_fixed_and_keeps_its_hash():
    c = recipe("synthetic", "hybrid", 256)
    d = c.to_dict()
    for k in ("profile", "jpeg_draft", "bottleneck_fp32", "rrc_ratio", "full_map"):
        d.pop(k)
    old = RunConfig.from_dict(d)
    assert old.profile == "fixed" and old.config_hash() == c.config_hash()


# ---- each switch changes what is built --------------------------------------------------------
def _synthetic(loss, res, profile, **over):
    base = dict(device="cpu", num_workers=0)
    base.update(over)
    return apply_profile(recipe("synthetic", loss, res), profile).with_overrides(**base)


def test_proxies_per_image_sizes_the_proxies():
    ref = _synthetic("proxy_anchor", 224, "reference")
    fix = _synthetic("proxy_anchor", 224, "fixed")
    data = build_run_data(ref)
    assert build_run_loss(ref, data).proxies.shape[0] == len(data.train_labels)  # one per training image
    assert build_run_loss(fix, data).proxies.shape[0] == data.num_classes


@pytest.mark.parametrize("profile,kept", [("reference", True), ("fixed", False)])
def test_proxy_grads_accumulate_across_steps(profile, kept):
    from ctxsim.train.events import NullSink
    from ctxsim.train.trainer import Trainer

    cfg = _synthetic("proxy_nca", 256, profile, proxy_lr=1e-3)
    assert cfg.proxy_grad_accumulate is kept
    t = Trainer(cfg, NullSink(), None, torch.device("cpu"), None)
    t.build()
    seen = []
    forward = t.loss_fn.forward

    def spy(emb, labels):
        seen.append(any(p.grad is not None for p in t.loss_fn.parameters()))  # after zero_grad
        return forward(emb, labels)

    t.loss_fn.forward = spy
    images, labels = next(iter(torch.utils.data.DataLoader(t.data.train, batch_size=16)))
    t.train_step(images, labels)
    t.train_step(images, labels)
    assert seen == [False, kept]


@pytest.fixture()
def cub_tree(tmp_path):
    from ctxsim.data.fake import make_fake_benchmark

    make_fake_benchmark("cub", tmp_path, train_classes=3, test_classes=3, per_class=2)
    return str(tmp_path)


def test_jpeg_draft_and_rrc_ratio_reach_the_pipeline(cub_tree):
    ref = recipe("cub", "hybrid", 256, profile="reference").with_overrides(root=cub_tree)
    fix = recipe("cub", "hybrid", 256, profile="fixed").with_overrides(root=cub_tree)
    tr, tf = build_run_data(ref).train.transform, build_run_data(fix).train.transform
    assert (tr.draft, tf.draft) == (False, True)
    assert tr.recipe.ratio == (0.75, 1.33)
    assert tf.recipe.ratio == pytest.approx((3 / 4, 4 / 3)) and tf.recipe.ratio != (0.75, 1.33)


@pytest.mark.parametrize("fp32,dtype", [(True, torch.float32), (False, torch.bfloat16)])
def test_bottleneck_dtype_under_autocast(fp32, dtype):
    from ctxsim.models import build_model
    from ctxsim.train.trainer import project_for_loss

    torch.manual_seed(0)
    model = build_model(arch="tiny", pooling="avg", embedding_size=8, bottleneck="linear", bottleneck_size=16)
    seen = []
    model.bottleneck.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):  # CPU stand-in for CUDA fp16
        out = project_for_loss(model, model(torch.randn(2, 3, 16, 16)), fp32)
    assert out.dtype == torch.float32 and seen == [dtype]
    ref, fix = recipe("cub", "hybrid", 224, profile="reference"), recipe("cub", "hybrid", 224, profile="fixed")
    assert (ref.bottleneck_fp32, fix.bottleneck_fp32) == (True, False)


def test_reported_ks_map_and_selection():
    ref = profile_values("reference", "cub", "hybrid", 224)
    assert ref["ks"] == [1, 2, 4, 8, 16, 32] and ref["full_map"] and ref["select"] == "last"
    ref256 = profile_values("reference", "sop", "hybrid", 256)
    assert ref256["ks"] == [1, 10, 100] and not ref256["full_map"] and ref256["select"] == "best"
    fix = profile_values("fixed", "cub", "hybrid", 224)
    assert fix["ks"] is None and not fix["full_map"] and fix["select"] == "last"
    assert profile_values("fixed", "sop", "hybrid", 256)["select"] == "last"


def test_full_map_adds_map_to_the_evaluation():
    from ctxsim.train.evaluation import evaluate_model

    cfg = _synthetic("hybrid", 224, "fixed")
    data = build_run_data(cfg)
    from ctxsim.train.build import build_run_model

    torch.manual_seed(0)
    model = build_run_model(cfg, data.in_channels)
    plain = evaluate_model(model, data, cfg, "cpu")
    with_map = evaluate_model(model, data, cfg.with_overrides(full_map=True, ks=[1, 2, 4, 8, 16, 32]), "cpu")
    assert "mAP" not in plain and 0 < with_map["mAP"] <= 1 and "R@32" in with_map
    assert with_map["R@1"] == plain["R@1"] and with_map["MAP@R"] == plain["MAP@R"]
