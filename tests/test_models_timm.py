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
