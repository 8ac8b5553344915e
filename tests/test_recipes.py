"""Recipe values against the reference-implementation tables (§1.4, §2.3, §3.1, §3.2) and RunConfig behaviour."""

from __future__ import annotations

import json

import pytest

from ctxsim.errors import ConfigError
from ctxsim.train import RunConfig, recipe
from ctxsim.train.recipes import DATASETS, LOSS_NAMES, recipe_provenance

# reference-implementation §2.3 (224, CUB and Cars): loss -> (lr, bottleneck, gamma, IPC, warm)
SPEC_224_CUB_CARS = {
    "cub": {
        "contrastive": (2e-5, "linear", 0.0, 4, 0), "roadmap": (2e-5, "linear", 0.1, 4, 0),
        "triplet": (8e-5, "identity", 0.1, 4, 0), "ms_miner": (1.6e-4, "linear", 0.0, 4, 0),
        "proxy_anchor": (1.6e-4, "linear", 0.0, 0, 10), "proxy_nca": (1.6e-4, "linear", 0.0, 0, 10),
        "hybrid": (1.4e-4, "linear", 0.1, 4, 0),
    },
    "cars": {
        "contrastive": (8e-5, "linear", 0.1, 4, 0), "roadmap": (2e-5, "linear", 0.0, 4, 0),
        "triplet": (8e-5, "identity", 0.1, 4, 0), "ms_miner": (8e-5, "linear", 0.0, 4, 0),
        "proxy_anchor": (8e-5, "linear", 0.0, 0, 10), "proxy_nca": (1.6e-4, "linear", 0.0, 0, 10),
        "hybrid": (8e-5, "linear", 0.1, 4, 0),
    },
}
# reference-implementation §2.3 (224, SOP, all identity): loss -> (lr, gamma, IPC, warm, hierarchical, epochs, decay step)
SPEC_224_SOP = {
    "contrastive": (4e-5, 0.0, 4, 0, 1, 80, 15), "roadmap": (4e-5, 0.1, 4, 0, 1, 80, 15),
    "triplet": (4e-5, 0.1, 4, 0, 1, 80, 15), "ms_miner": (8e-5, 0.0, 4, 0, 1, 80, 15),
    "proxy_anchor": (1.6e-4, 0.0, 0, 1, 0, 115, 21), "proxy_nca": (1.6e-4, 0.0, 0, 1, 0, 115, 21),
    "hybrid": (6e-5, 0.1, 4, 0, 1, 80, 15),
}
# reference-implementation §3.1 README runs: dataset -> (bs, epochs, decay step, decay gamma, xform_scale, testfreq, lam, eps)
SPEC_224_RUNS = {
    "cub": (128, 60, 10, 0.3, 0.16, 10, 0.05, 0.04),
    "cars": (64, 160, 20, 0.5, 0.12, 10, 0.2, 0.05),
    "sop": (128, 80, 15, 0.3, 0.08, 5, 0.2, 0.05),
}
# reference-implementation §3.2 README runs: dataset -> (lr, batch, pooling, layernorm, sampler)
SPEC_256 = {
    "cub": (8e-5, 128, "max", True, "random256"), "cars": (1.6e-4, 128, "max", True, "random256"),
    "sop": (4e-5, 128, "avg", False, "hierarchical"), "inat": (8e-5, 256, "avg", False, "hierarchical"),
    "inshop": (4e-5, 128, "avg", False, "random256"),
}


def _gamma(cfg: RunConfig) -> float:
    if cfg.loss == "hybrid":
        return cfg.loss_kw["gamma"]
    return cfg.loss_kw.get("reg_gamma", 0.0)


@pytest.mark.parametrize("dataset", ["cub", "cars"])
def test_224_cub_cars_rows(dataset):
    bs, epochs, step, dgamma, xs, testfreq, lam, eps = SPEC_224_RUNS[dataset]
    for loss, (lr, bottleneck, gamma, ipc, warm) in SPEC_224_CUB_CARS[dataset].items():
        c = recipe(dataset, loss, 224)
        assert (c.lr, c.model.bottleneck, _gamma(c), c.samples_per_class, c.warm) == (lr, bottleneck, gamma, ipc, warm), loss
        assert c.sampler == ("shuffle" if ipc == 0 else "balanced224")
        # the remaining flags are the dataset's hybrid run values (§2.3 "Other settings")
        assert (c.batch_size, c.epochs, c.lr_decay_step, c.lr_decay_gamma, c.xform_scale, c.eval_every) == (
            bs, epochs, step, dgamma, xs, testfreq)
        if gamma > 0:
            assert c.loss_kw["reg_sim"] == 0.3  # 224 --regsim default (§1.4)


def test_224_sop_rows():
    bs, _, _, dgamma, xs, testfreq, lam, eps = SPEC_224_RUNS["sop"]
    for loss, (lr, gamma, ipc, warm, hier, epochs, step) in SPEC_224_SOP.items():
        c = recipe("sop", loss, 224)
        assert c.model.bottleneck == "identity"
        assert (c.lr, _gamma(c), c.samples_per_class, c.warm, c.epochs, c.lr_decay_step) == (lr, gamma, ipc, warm, epochs, step), loss
        expected = "hierarchical" if hier else ("shuffle" if ipc == 0 else "balanced224")
        assert c.sampler == expected, loss
        if hier:
            assert c.sampler_kw["max_batches"] == 84480 // bs == 660
        assert (c.batch_size, c.lr_decay_gamma, c.xform_scale, c.eval_every) == (bs, dgamma, xs, testfreq)


@pytest.mark.parametrize("dataset", ["cub", "cars", "sop"])
def test_224_hybrid_weights_and_setup(dataset):
    _, _, _, _, _, _, lam, eps = SPEC_224_RUNS[dataset]
    c = recipe(dataset, "hybrid", 224)
    kw = c.loss_kw
    assert c.convention == "224"
    assert (kw["lam"], kw["eps"], kw["gamma"], kw["k"], kw["pos_margin"], kw["neg_margin"], kw["reg_sim"]) == (
        lam, eps, 0.1, 4, 0.75, 0.6, 0.3)
    m = c.model
    assert (m.arch, m.pooling, m.layernorm, m.embedding_size, m.bottleneck_size, m.bn_mode, m.backbone_weights) == (
        "resnet50", "gem", False, 512, 2048, "freeze", "imagenet")
    # §3.1 optimizer: AdamW wd 1e-4; backbone lr, embedding x1, bottleneck x2, proxies x100; StepLR; last epoch
    assert (c.optimizer, c.weight_decay, c.backbone_lr_mult, c.embedding_lr_mult, c.bottleneck_lr_mult,
            c.proxy_lr_mult, c.proxy_lr, c.separate_optimizers) == ("adamw", 1e-4, 1.0, 1.0, 2.0, 100.0, None, False)
    assert c.schedule == "step" and c.select == "last" and c.amp


def test_224_hybrid_contextual_weight_matches_readme():
    # §1.4: the weight on the contextual term is 0.95 for CUB and 0.8 for Cars/SOP (224: lam weights L_con)
    assert 1 - recipe("cub", "hybrid", 224).loss_kw["lam"] == pytest.approx(0.95)
    assert 1 - recipe("cars", "hybrid", 224).loss_kw["lam"] == pytest.approx(0.8)
    assert 1 - recipe("sop", "hybrid", 224).loss_kw["lam"] == pytest.approx(0.8)


@pytest.mark.parametrize("dataset", sorted(SPEC_256))
def test_256_readme_runs(dataset):
    lr, bs, pooling, ln, sampler = SPEC_256[dataset]
    c = recipe(dataset, "hybrid", 256)
    assert (c.lr, c.batch_size, c.model.pooling, c.model.layernorm, c.sampler) == (lr, bs, pooling, ln, sampler)
    assert c.convention == "256"
    assert c.loss_kw == dict(lam=0.4, gamma=0.1, eps=0.05, k=4, pos_margin=0.75, neg_margin=0.6, reg_sim=0.25)
    assert (c.epochs, c.eval_every, c.schedule, c.milestones, c.lr_decay_gamma) == (80, 5, "multistep", [15, 30, 45], 0.3)
    assert (c.optimizer, c.separate_optimizers, c.backbone_lr_mult, c.embedding_lr_mult, c.weight_decay) == (
        "adam", True, 0.5, 1.0, 1e-4)
    assert c.model.bn_mode == "eval_stats" and c.model.bottleneck == "identity" and c.model.embedding_size == 512
    assert c.select == "best"  # main.py reloads the best test checkpoint (§9.6), labelled in the result


def test_256_sampler_settings():
    assert recipe("cub", "hybrid", 256).sampler_kw == {"num_batches": 42, "tries": 5}
    assert recipe("cars", "hybrid", 256).sampler_kw == {"num_batches": 42, "tries": 10}
    assert recipe("inshop", "hybrid", 256).sampler_kw == {"num_batches": 600, "tries": 10}
    assert recipe("sop", "hybrid", 256).sampler_kw["batch_multiplier"] == 66
    assert recipe("inat", "hybrid", 256).sampler_kw["batch_multiplier"] == 70


def test_256_baselines():
    c = recipe("cub", "proxy_nca", 256)
    assert c.loss_kw["softmax_scale"] == 10 and c.proxy_lr == 1e-3  # own Adam at --loss_lr (§2.2)
    assert recipe("cub", "proxy_nca", 224).loss_kw["softmax_scale"] == 9
    assert recipe("sop", "normsoftmax", 256).loss_kw["temperature"] == 0.05
    assert recipe("cub", "contrastive", 256).loss_kw == {}  # (0.9, 0.6) are the loss defaults
    # the reference bugs of §9.4/§9.5 are on in the reference profile (the default here), off in fixed
    assert recipe("cub", "proxy_nca", 256).proxy_grad_accumulate
    assert recipe("cub", "proxy_anchor", 224).proxies_per_image
    for d, l, r in (("cub", "proxy_nca", 256), ("cub", "proxy_anchor", 224)):
        c = recipe(d, l, r, profile="fixed")
        assert not c.proxy_grad_accumulate and not c.proxies_per_image


def test_every_combination_builds_and_roundtrips():
    for r in (224, 256):
        for d in DATASETS:
            for loss in LOSS_NAMES:
                if r == 224 and d in ("inat", "inshop"):
                    with pytest.raises(ConfigError, match="resolution 256"):
                        recipe(d, loss, r)
                    continue
                c = recipe(d, loss, r)
                assert RunConfig.from_json(c.to_json()) == c
                assert recipe_provenance(d, loss, r)


def test_unknown_names_list_choices():
    with pytest.raises(ConfigError, match="choose from: cub, cars"):
        recipe("imagenet", "hybrid")
    with pytest.raises(ConfigError, match="choose from: hybrid, contrastive"):
        recipe("cub", "arcface")
    with pytest.raises(ConfigError, match="224 or 256"):
        recipe("cub", "hybrid", 128)
    assert recipe("CUB200", "MS+miner", 224).loss == "ms_miner"


def test_with_sets_typed_and_unknown_keys():
    c = recipe("cub", "hybrid", 224)
    d = c.with_sets(["lr=1e-4", "loss.lam=0.3", "model.pooling=avg", "epochs=3", "amp=false",
                     "milestones=2,4", "ks=[1,2]", "sampler.num_batches=5", "proxy_lr=none"])
    assert (d.lr, d.loss_kw["lam"], d.model.pooling, d.epochs, d.amp, d.milestones, d.ks) == (
        1e-4, 0.3, "avg", 3, False, [2, 4], [1, 2])
    assert d.sampler_kw == {"num_batches": 5} and d.proxy_lr is None
    assert c.lr == 1.4e-4  # the original is unchanged
    with pytest.raises(ConfigError, match="unknown config key 'lrr'; did you mean lr"):
        c.with_sets(["lrr=1"])
    with pytest.raises(ConfigError, match="model.pooling"):
        c.with_sets(["model.poolng=avg"])
    with pytest.raises(ConfigError, match="epochs expects an integer"):
        c.with_sets(["epochs=many"])
    with pytest.raises(ConfigError, match="must be one of"):
        c.with_sets(["model.pooling=median"])
    with pytest.raises(ConfigError, match="key=value"):
        c.with_sets(["lr"])
    with pytest.raises(ConfigError, match="batch_size"):
        c.with_sets(["batch_size=130"])  # not a multiple of IPC 4


def test_config_hash_is_stable_and_meaningful():
    c = recipe("cars", "hybrid", 256)
    assert c.config_hash() == recipe("cars", "hybrid", 256).config_hash()
    assert c.config_hash() != c.with_overrides(lr=1e-3).config_hash()
    assert c.config_hash() == c.with_overrides(name="x", tags=["a"], num_workers=1).config_hash()
    assert json.loads(c.to_json())["convention"] == "256"
    with pytest.raises(ConfigError):
        c.with_overrides(not_a_field=1)
    with pytest.raises(ConfigError, match="unknown config key"):
        RunConfig.from_dict({**c.to_dict(), "bogus": 1})


def test_small_data_recipes():
    for d in ("fashion-mnist", "digits", "synthetic"):
        for r in (224, 256):
            c = recipe(d, "hybrid", r)
            assert c.model.arch in ("tiny", "tiny_spatial") and c.model.backbone_weights is None
            assert c.convention == str(r)
            assert c.optimizer == ("adamw" if r == 224 else "adam")


# docs/recipes-vit.md: HIER's scripts/DINO/hier_<dataset>.sh -> (epochs, warm-up epochs, weight decay, head lr scale, eval period)
SPEC_VIT_HIER = {
    "cub": (100, 1, 1e-2, 1.0, 1), "cars": (100, 1, 1e-2, 1.0, 1),
    "sop": (150, 5, 1e-4, 100.0, 5), "inshop": (150, 5, 1e-4, 100.0, 1),
}


@pytest.mark.parametrize("dataset", sorted(SPEC_VIT_HIER))
def test_vit_s16_recipe_follows_hier_and_keeps_the_papers_loss_settings(dataset):
    epochs, warm, wd, head_mult, every = SPEC_VIT_HIER[dataset]
    c = recipe(dataset, "hybrid", None, family="vit-s16-224")
    assert (c.epochs, c.warm, c.weight_decay, c.embedding_lr_mult, c.eval_every) == (epochs, warm, wd, head_mult, every)
    # common: DINO ViT-S/16 from timm, class token -> LayerNorm (no affine) -> Linear(384, 128) orthogonal,
    # patch projection frozen, AdamW 5e-6 at batch 180, constant lr, RRC scale 0.2 at 224 px
    m = c.model
    assert (m.arch, m.pooling, m.layernorm, m.embedding_size, m.embedding_init, m.freeze_patch_embed, m.bn_mode) == (
        "timm:vit_small_patch16_224.dino", "avg", True, 128, "orthogonal", True, "none")
    assert (c.optimizer, c.lr, c.batch_size, c.schedule, c.xform_scale, c.resolution, c.clip_grad) == (
        "adamw", 5e-6, 180, "none", 0.2, 224, 3.0)
    assert (c.recipe, c.profile, c.select, c.sampler, c.samples_per_class) == ("vit-s16-224", "fixed", "last", "m_per_class", 4)
    paper = recipe(dataset, "hybrid", 224 if dataset != "inshop" else 256)
    assert c.convention == paper.convention and c.loss_kw == {**paper.loss_kw, "k": 4}
    pa = recipe(dataset, "proxy_anchor", None, family="vit-s16-224")
    assert (pa.sampler, pa.samples_per_class) == ("m_per_class", 2)  # HIER: Proxy-Anchor with 2 per class
    assert "not the paper's ResNet-50 tables" in recipe_provenance(dataset, "hybrid", 224, "vit-s16-224")


def test_vit_s16_recipe_refuses_what_it_does_not_cover():
    with pytest.raises(ConfigError, match="covers cub, cars, sop, inshop"):
        recipe("inat", "hybrid", None, family="vit-s16-224")
    with pytest.raises(ConfigError, match="224 px; drop --resolution 256"):
        recipe("cub", "hybrid", 256, family="vit-s16-224")
    with pytest.raises(ConfigError, match="unknown recipe 'vit'; choose from paper, vit-s16-224"):
        recipe("cub", "hybrid", 224, family="vit")
    # the new keys leave the hash of every earlier config alone (left out at their defaults)
    c = recipe("cub", "hybrid", 224)
    assert c.config_hash() == RunConfig.from_dict({k: v for k, v in c.to_dict().items() if k != "recipe"}).config_hash()
    d = c.to_dict()
    del d["model"]["freeze_patch_embed"]
    assert RunConfig.from_dict(d).config_hash() == c.config_hash()
    assert recipe("cub", "hybrid", None, family="vit-s16-224").config_hash() != c.config_hash()


def _evaluate_seeing_metric_kwargs(monkeypatch, config):
    """Evaluates a tiny random model on synthetic data under ``config``; returns the keyword
    arguments the metrics were called with, and the metrics."""
    import torch

    import ctxsim.eval.evaluate as evaluate
    from ctxsim.data import build_data
    from ctxsim.models import build_model
    from ctxsim.train.evaluation import evaluate_model

    seen = {}
    real = evaluate.retrieval_results

    def spy(*a, **kw):
        seen.update(kw)
        return real(*a, **kw)

    monkeypatch.setattr(evaluate, "retrieval_results", spy)
    data = build_data("synthetic")
    torch.manual_seed(0)
    model = build_model(arch=config.model.arch, pooling="avg", embedding_size=8, in_channels=data.in_channels).eval()
    return seen, evaluate_model(model, data, config.with_overrides(num_workers=0), "cpu")


def test_eval_memory_budget_is_a_setting_that_changes_no_result(monkeypatch):
    """``--set eval.memory_gb=…`` reaches the metrics (ctxsim.eval.metrics: blocks within the budget);
    it is left out of the hash and of comparability, as the results are exact at any budget."""

    from ctxsim.report.comparability import NON_RESULT_KEYS

    c = recipe("synthetic", "hybrid", 256)
    small = c.with_sets(["eval.memory_gb=0.25"])
    assert small.eval_memory_gb == 0.25 and small.config_hash() == c.config_hash()
    assert "eval_memory_gb" in NON_RESULT_KEYS
    with pytest.raises(ConfigError, match="eval.memory_gb must be > 0"):
        c.with_sets(["eval.memory_gb=0"])
    seen, _ = _evaluate_seeing_metric_kwargs(monkeypatch, small)
    assert seen["memory_gb"] == 0.25


def test_eval_precision_is_a_setting_hashed_only_when_set(monkeypatch):
    """``--set eval.precision=float64`` reaches the metrics (float64 scores by torch matmul); at its default
    it leaves every config hash as it was (hashed unless float32), and it is not a deviation from the
    recipe (float rounding of near-tied scores, as ``deterministic``)."""
    from ctxsim.report.comparability import NON_RESULT_KEYS

    c = recipe("synthetic", "hybrid", 256)
    assert c.eval_precision == "float32"
    d = c.to_dict()
    del d["eval_precision"]  # a config recorded before the key existed
    assert RunConfig.from_dict(d).config_hash() == c.config_hash()
    wide = c.with_sets(["eval.precision=float64"])
    assert wide.eval_precision == "float64" and wide.config_hash() != c.config_hash()
    assert wide.with_sets(["eval.precision=float32"]).config_hash() == c.config_hash()
    assert "eval_precision" in NON_RESULT_KEYS
    with pytest.raises(ConfigError, match="eval.precision must be one of float32, float64; got 'float16'"):
        c.with_sets(["eval.precision=float16"])
    seen, metrics = _evaluate_seeing_metric_kwargs(monkeypatch, wide)
    assert seen["precision"] == "float64" and 0 <= metrics["MAP@R"] <= 1
