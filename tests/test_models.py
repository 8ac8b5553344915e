"""ctxsim.models: shapes, bottleneck, BN modes, warm-up, parameter groups, weights loading."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from ctxsim.errors import ConfigError
from ctxsim.models import GeM, build_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _torch_seed():
    torch.manual_seed(0)


def _bns(model):
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.mark.parametrize("pooling", ["gem", "max", "avg", "avgmax"])
@pytest.mark.parametrize("layernorm", [False, True])
def test_tiny_shapes_and_normalised(pooling, layernorm):
    model = build_model("tiny", pooling=pooling, layernorm=layernorm, embedding_size=16, in_channels=1).eval()
    for size in (8, 28):
        out = model(torch.randn(3, 1, size, size))
        assert out.shape == (3, 16) and out.dtype == torch.float32
        torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    assert model.feature_dim == 128 and model.embedding_size == 16


def test_resnet50_random_weights_shapes_and_bottleneck():
    model = build_model("resnet50", bottleneck="linear", bottleneck_size=64, embedding_size=32).eval()
    assert model.feature_dim == 2048 and model.embedding_size == 32 and model.output_size == 64
    with torch.no_grad():
        emb = model(torch.randn(2, 3, 64, 64))
        proj = model.project(emb)
    assert emb.shape == (2, 32) and proj.shape == (2, 64)
    torch.testing.assert_close(proj.norm(dim=1), torch.ones(2))
    lin = model.bottleneck.linear
    assert lin.bias is None and lin.weight.shape == (64, 32)
    torch.testing.assert_close(proj, nn.functional.normalize(emb @ lin.weight.T, dim=1))
    # embedding init of the 224 code: kaiming normal fan_out, bias 0
    assert torch.count_nonzero(model.embedding.bias) == 0
    std = model.embedding.weight.std().item()
    assert abs(std - (2.0 / 32) ** 0.5) < 0.02


def test_identity_bottleneck_and_layernorm_placement():
    model = build_model("tiny", pooling="max", layernorm=True, embedding_size=8, in_channels=3).eval()
    x = torch.randn(4, 3, 12, 12)
    emb = model(x)
    assert torch.equal(model.project(emb), emb)
    feats = model.features(x)
    torch.testing.assert_close(feats.mean(dim=1), torch.zeros(4), atol=1e-5, rtol=0)
    assert model.param_groups()["bottleneck"] == []


def test_gem_formula():
    x = torch.rand(2, 5, 3, 4) + 0.1
    expected = (x ** 3).mean(dim=(2, 3), keepdim=True) ** (1 / 3)
    torch.testing.assert_close(GeM()(x), expected)
    assert list(GeM().parameters()) == []  # p fixed, as the 224 code


def test_param_groups_partition_exactly_once():
    for kw in ({"arch": "tiny", "bottleneck": "linear", "in_channels": 1}, {"arch": "resnet50"}):
        model = build_model(**kw, bottleneck_size=16, embedding_size=8)
        groups = model.param_groups()
        ids = [id(p) for g in groups.values() for p in g]
        assert len(ids) == len(set(ids))
        assert set(ids) == {id(p) for p in model.parameters()}
        assert {id(p) for p in groups["embedding"]} == {id(p) for p in model.embedding.parameters()}


def test_bn_freeze_mode():
    model = build_model("tiny", bn_mode="freeze", in_channels=1)
    model.train()
    bns = _bns(model)
    assert bns and all(not m.training for m in bns)
    assert all(not p.requires_grad for m in bns for p in m.parameters())
    # a plain nn.Module.train on the children would undo it; apply_bn_mode re-applies
    for m in bns:
        m.train()
    model.apply_bn_mode()
    assert all(not m.training for m in bns)
    # running statistics do not move in training mode
    before = bns[0].running_mean.clone()
    model(torch.randn(4, 1, 8, 8) * 3 + 1)
    assert torch.equal(before, bns[0].running_mean)
    assert model.embedding.weight.requires_grad


def test_bn_eval_stats_mode_keeps_affine_trainable():
    model = build_model("tiny", bn_mode="eval_stats", in_channels=1).train()
    bns = _bns(model)
    assert all(not m.training for m in bns)
    assert all(p.requires_grad for m in bns for p in m.parameters())


def test_bn_none_mode_trains_stats():
    model = build_model("tiny", bn_mode="none", in_channels=1).train()
    bns = _bns(model)
    assert all(m.training for m in bns)
    before = bns[0].running_mean.clone()
    model(torch.randn(4, 1, 8, 8) * 3 + 1)
    assert not torch.equal(before, bns[0].running_mean)


def test_warmup_freezes_all_but_embedding_and_unfreezes_bn_affine():
    model = build_model("tiny", bn_mode="freeze", bottleneck="linear", bottleneck_size=16, in_channels=1)
    model.set_warmup(True)
    groups = model.param_groups()
    assert all(not p.requires_grad for p in groups["backbone"])
    assert all(p.requires_grad for p in groups["embedding"] + groups["bottleneck"])
    # gradients reach only the embedding/bottleneck
    out = model.project(model(torch.randn(4, 1, 8, 8)))
    out.sum().backward()
    assert all(p.grad is None for p in groups["backbone"])
    assert model.embedding.weight.grad is not None
    model.set_warmup(False)
    # reference side effect (reference-implementation §9.14): BN affine trainable after warm-up, stats still frozen
    assert all(p.requires_grad for p in model.parameters())
    model.train()
    assert all(not m.training for m in _bns(model))


def test_local_weights_round_trip(tmp_path):
    src = build_model("resnet50", embedding_size=8).eval()
    path = tmp_path / "trunk.pth"
    torch.save(src.backbone.state_dict(), path)
    dst = build_model("resnet50", embedding_size=8, backbone_weights=str(path)).eval()
    for (k, a), (_, b) in zip(src.backbone.state_dict().items(), dst.backbone.state_dict().items()):
        assert torch.equal(a, b), k
    # a torchvision-style file with the classifier and a DataParallel prefix also loads
    wrapped = {"module." + k: v for k, v in src.backbone.state_dict().items()}
    wrapped["module.fc.weight"] = torch.zeros(1000, 2048)
    torch.save({"state_dict": wrapped}, tmp_path / "wrapped.pth")
    dst2 = build_model("resnet50", embedding_size=8, backbone_weights=tmp_path / "wrapped.pth").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(src.features(x), dst2.features(x))


def test_local_weights_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        build_model("tiny", in_channels=1, backbone_weights=tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="cannot read"):
        build_model("tiny", in_channels=1, backbone_weights=bad)
    other = tmp_path / "other.pth"
    torch.save(build_model("tiny", in_channels=3).backbone.state_dict(), other)
    with pytest.raises(ConfigError, match="shape mismatch"):
        build_model("tiny", in_channels=1, backbone_weights=other)
    torch.save(build_model("tiny", in_channels=1).backbone.state_dict(), other)
    with pytest.raises(ConfigError, match="missing keys"):
        build_model("resnet50", backbone_weights=other)


def test_grayscale_adaptation_of_rgb_weights(tmp_path):
    rgb = build_model("resnet50", embedding_size=8).eval()
    path = tmp_path / "rgb.pth"
    torch.save(rgb.backbone.state_dict(), path)
    gray = build_model("resnet50", embedding_size=8, in_channels=1, backbone_weights=path).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(gray.features(x), rgb.features(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4)


def test_imagenet_offline_raises_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("CTXSIM_OFFLINE", "1")
    with pytest.raises(ConfigError) as info:
        build_model("resnet50", backbone_weights="imagenet")
    msg = str(info.value)
    assert "\n" not in msg and "--backbone-weights PATH" in msg and "connect" in msg
    with pytest.raises(ConfigError, match="only for arch resnet50"):
        build_model("tiny", backbone_weights="imagenet")


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="arch"):
        build_model("vgg")
    with pytest.raises(ValueError, match="pooling"):
        build_model("tiny", pooling="median")
    with pytest.raises(ValueError, match="bn_mode"):
        build_model("tiny", bn_mode="frozen")
    with pytest.raises(ValueError, match="bottleneck"):
        build_model("tiny", bottleneck="mlp")
    with pytest.raises(ValueError, match="embedding_size"):
        build_model("tiny", embedding_size=0)


def test_picklable_and_deepcopyable():
    model = build_model("tiny", pooling="avgmax", layernorm=True, bottleneck="linear", bottleneck_size=8,
                        bn_mode="freeze", in_channels=1).eval()
    x = torch.randn(2, 1, 8, 8)
    clone = pickle.loads(pickle.dumps(model))
    torch.testing.assert_close(clone(x), model(x))
    torch.testing.assert_close(copy.deepcopy(model)(x), model(x))
    assert clone.spec == model.spec


def test_spec_rebuilds_the_same_architecture():
    model = build_model("tiny", pooling="max", layernorm=True, bottleneck="linear", bottleneck_size=8,
                        bn_mode="eval_stats", in_channels=1, embedding_size=4, embedding_init="default")
    clone = build_model(**model.spec)
    clone.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(clone.eval()(x), model.eval()(x))
    assert clone.spec == model.spec
