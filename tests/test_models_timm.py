"""timm trunks (``model.arch=timm:<name>``, ctxsim.models.timm_trunk): CNN maps pooled by the head,
a transformer's class token as the pooled feature, local weight files, the offline message, and a
run end to end. timm's tiny ``test_*`` models keep it fast; nothing is downloaded."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from ctxsim.errors import ConfigError
from ctxsim.models import build_model

pytest.importorskip("timm", reason="timm comes with the test extras (pip install -e '.[test]')")


def test_a_cnn_map_is_pooled_by_the_head_and_a_vit_gives_its_class_token():
    cnn = build_model(arch="timm:test_convnext", pooling="gem", embedding_size=16, backbone_weights=None)
    assert not cnn.backbone.pre_pooled and cnn.feature_dim == cnn.backbone.net.num_features
    assert cnn.backbone(torch.randn(2, 3, 64, 64)).ndim == 4
    vit = build_model(arch="timm:test_vit", pooling="avg", embedding_size=16, backbone_weights=None)
    size = vit.backbone.net.pretrained_cfg["input_size"][1:]
    x = torch.randn(2, 3, *size)
    assert vit.backbone.pre_pooled and vit.backbone(x).shape == (2, vit.feature_dim, 1, 1)
    # the head's feature is the class token (timm's pre-logits), untouched by pooling
    want = vit.backbone.net.forward_head(vit.backbone.net.forward_features(x), pre_logits=True)
    assert torch.allclose(vit.features(x), want)
    assert torch.allclose(vit(x).norm(dim=1), torch.ones(2))
    with pytest.raises(ConfigError, match="use model.pooling=avg"):
        build_model(arch="timm:test_vit", pooling="gem", backbone_weights=None)
    with pytest.raises(ConfigError, match="timm has no model 'no_such_net'"):
        build_model(arch="timm:no_such_net", pooling="avg", backbone_weights=None)


def test_local_weights_load_and_a_foreign_file_is_one_line(tmp_path):
    a = build_model(arch="timm:test_convnext", pooling="avg", backbone_weights=None)
    path = tmp_path / "convnext.pth"
    torch.save(a.backbone.net.state_dict(), path)
    b = build_model(arch="timm:test_convnext", pooling="avg", backbone_weights=str(path))
    for (k, va), (_, vb) in zip(a.backbone.net.state_dict().items(), b.backbone.net.state_dict().items()):
        assert torch.equal(va, vb), k
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="do not fit timm model test_convnext"):
        build_model(arch="timm:test_convnext", pooling="avg", backbone_weights=str(tmp_path / "other.pth"))


def test_pretrained_weights_offline_say_how_to_get_them(tmp_path):
    """An offline machine without timm's cached weights: ``ctxsim run`` ends with one line that says
    how to pre-fetch them or pass a local file (HF_HUB_OFFLINE: nothing is tried on the network)."""
    env = {k: v for k, v in os.environ.items() if k != "CTXSIM_DB"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    r = subprocess.run([sys.executable, "-m", "ctxsim.cli.main", "run", "-d", "synthetic", "-l", "hybrid",
                        "--set", "model.arch=timm:test_vit", "--set", "model.pooling=avg", "--epochs", "1",
                        "--backbone-weights", "imagenet", "--device", "cpu", "--db", str(tmp_path / "e.db")],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert "not in the cache" in last and "pretrained=True" in last and "--backbone-weights PATH" in last, last


@pytest.mark.slow
def test_a_run_with_a_timm_trunk_ends_done(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CTXSIM_DB"}
    r = subprocess.run([sys.executable, "-m", "ctxsim.cli.main", "run", "-d", "synthetic", "-l", "hybrid",
                        "--set", "model.arch=timm:test_convnext", "--set", "model.pooling=avg",
                        "--set", "sampler.num_batches=2", "--epochs", "1", "--backbone-weights", "none",
                        "--device", "cpu", "--json", "--db", str(tmp_path / "e.db")],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert '"R@1"' in r.stdout


def test_images_are_resized_to_what_the_model_needs():
    """A transformer gets its patch grid's input size (8 px digits would have no 16 px patch); a
    CNN gets at least 32 px a side; inputs that fit pass untouched."""
    strict = build_model(arch="timm:vit_tiny_patch16_224", pooling="avg", embedding_size=8, backbone_weights=None)
    assert strict.backbone.input_size == (224, 224)
    assert strict(torch.randn(2, 3, 8, 8)).shape == (2, 8)
    vit = build_model(arch="timm:test_vit", pooling="avg", embedding_size=8, backbone_weights=None)
    assert vit.backbone._fit(torch.randn(1, 3, 32, 32)).shape[-2:] == (160, 160)
    x = torch.randn(1, 3, 160, 160)
    assert vit.backbone._fit(x) is x
    cnn = build_model(arch="timm:test_convnext", pooling="avg", embedding_size=8, backbone_weights=None)
    assert cnn.backbone._fit(torch.randn(1, 3, 8, 12)).shape[-2:] == (32, 32)
    y = torch.randn(1, 3, 48, 40)
    assert cnn.backbone._fit(y) is y


def test_the_patch_embedding_stays_frozen_through_warm_up_and_the_head_is_orthogonal():
    m = build_model(arch="timm:test_vit", pooling="avg", layernorm=True, embedding_size=16, backbone_weights=None,
                    embedding_init="orthogonal", freeze_patch_embed=True)
    patch = {id(p) for p in m.backbone.net.patch_embed.parameters()}
    assert patch and all(not p.requires_grad for p in m.backbone.net.patch_embed.parameters())
    for frozen in (True, False):
        m.set_warmup(frozen)
        assert all(not p.requires_grad for p in m.parameters() if id(p) in patch)
    assert all(p.requires_grad for p in m.parameters() if id(p) not in patch)  # after warm-up: the rest trains
    w = m.embedding.weight.detach()
    assert torch.allclose(w @ w.T, torch.eye(16), atol=1e-5) and torch.equal(m.embedding.bias, torch.zeros(16))
    with pytest.raises(ConfigError, match="freeze_patch_embed needs a transformer trunk"):
        build_model(arch="timm:test_convnext", pooling="avg", backbone_weights=None, freeze_patch_embed=True)


@pytest.mark.slow
def test_the_vit_recipe_trains_round_trips_and_resumes_on_cub_files(tmp_path):
    """The vit-s16-224 recipe on generated CUB files (the real loader), its trunk swapped for timm's
    tiny test_vit at random init: warm-up then training, a checkpoint that rebuilds the model and
    reproduces its metrics, and a stopped run that resumes to the uninterrupted result."""
    from ctxsim.data.fake import make_fake_benchmark
    from ctxsim.train import fit, load_checkpoint_model
    from ctxsim.train.checkpoint import load_checkpoint
    from ctxsim.train.configure import configure
    from ctxsim.train.events import ListSink

    make_fake_benchmark("cub", tmp_path / "data", train_classes=4, test_classes=3, per_class=4, size=(40, 32))
    cfg = configure("cub", "hybrid", root=str(tmp_path / "data"), recipe_family="vit-s16-224", sets=[
        "model.arch=timm:test_vit", "model.backbone_weights=none", "batch_size=8", "epochs=3", "warm=1",
        "max_steps_per_epoch=2", "num_workers=0", "device=cpu", "deterministic=true", "amp=false"])
    assert cfg.recipe == "vit-s16-224" and cfg.model.freeze_patch_embed and cfg.samples_per_class == 4
    full = fit(cfg, run_dir=tmp_path / "a")
    assert full.status == "done" and full.steps == 6 and full.selected == "last"
    ck = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    init_patch = "backbone.net.patch_embed.proj.weight"
    model, cfg2 = load_checkpoint_model(tmp_path / "a" / "checkpoint.pt")
    assert cfg2 == cfg and model.backbone.net.patch_embed.proj.weight.requires_grad is False
    from ctxsim.data import build_data
    from ctxsim.eval import evaluate_bundle

    assert evaluate_bundle(model, build_data("cub", root=str(tmp_path / "data"))) == pytest.approx(full.metrics)

    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3  # mid-epoch 2

    part = fit(cfg, run_dir=tmp_path / "b", should_stop=stop)
    assert part.status == "stopped" and part.steps == 3
    sink = ListSink()
    rest = fit(cfg, run_dir=tmp_path / "b", sink=sink)
    assert rest.status == "done" and sink.events[0].data["resumed"]
    assert rest.history == full.history and rest.metrics == full.metrics
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    for k in ck["model"]:
        assert torch.equal(ck["model"][k], b["model"][k]), k
    fresh = build_model(arch="timm:test_vit", pooling="avg", layernorm=True, embedding_size=128, backbone_weights=None)
    assert ck["model"][init_patch].shape == fresh.backbone.net.patch_embed.proj.weight.shape
