"""Importing the reference's released models (docs/reference-implementation.md §3.2): files in exactly main.py's format are
created here (classes named CUB_Network / SOP_Network in a module registered as ``networks``, same
attribute names, a real torchvision ResNet-50 with random weights and randomised BatchNorm
statistics), imported, and must embed a batch like the original module. Foreign pickles are
refused with one line and nothing executed."""

from __future__ import annotations

import os
import sys
import types
import warnings
import zipfile

import pytest
import torch
import torch.nn.functional as F
from torch import nn

# fp32 on CPU, same torchvision ops on both sides: the embeddings agree to rounding.
TOLERANCE = 1e-5


def _networks_module() -> types.ModuleType:
    """The reference's networks.py classes (docs/reference-implementation.md §3.2), attribute names as in the reference,
    defined here (nothing imported from the reference), registered as the module ``networks``."""
    import torchvision

    mod = types.ModuleType("networks")

    class CUB_Network(nn.Module):
        def __init__(self, embedding_size=512):
            super().__init__()
            self.backbone = torchvision.models.resnet50(weights=None)
            self.backbone.avgpool = nn.AdaptiveMaxPool2d((1, 1))
            self.backbone.fc = nn.Identity()
            self.standardize = nn.LayerNorm(2048, elementwise_affine=False)
            self.remap = nn.Linear(2048, embedding_size, bias=True)

        def forward(self, x):
            return F.normalize(self.remap(self.standardize(self.backbone(x))))

    class SOP_Network(nn.Module):
        def __init__(self, embedding_size=512):
            super().__init__()
            self.backbone = torchvision.models.resnet50(weights=None)
            self.backbone.fc = nn.Identity()
            self.remap = nn.Linear(2048, embedding_size, bias=True)

        def forward(self, x):
            return F.normalize(self.remap(self.backbone(x)))

    for cls in (CUB_Network, SOP_Network):
        cls.__module__ = "networks"
        cls.__qualname__ = cls.__name__
        setattr(mod, cls.__name__, cls)
    return mod


@pytest.fixture(scope="module")
def networks():
    old = sys.modules.get("networks")
    mod = _networks_module()
    sys.modules["networks"] = mod
    yield mod
    if old is None:
        sys.modules.pop("networks", None)
    else:
        sys.modules["networks"] = old


def _randomise(module: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine values, so a misplaced buffer cannot go unseen."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.num_batches_tracked.fill_(123)
    return module


def _save_reference_file(path, module, wrap: bool = False, n_losses: int = 5):
    """torch.save((module, loss_list, scaler)) as main.py does (optionally the DataParallel itself)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GradScaler without CUDA warns and disables itself
        scaler = torch.cuda.amp.GradScaler()
        obj = torch.nn.DataParallel(module) if wrap else module
    torch.save((obj, [1.0 / (i + 1) for i in range(n_losses)], scaler), path)
    return path


@pytest.fixture(scope="module")
def cub_file(networks, tmp_path_factory):
    torch.manual_seed(0)
    module = _randomise(networks.CUB_Network(embedding_size=128), 1).eval()
    path = _save_reference_file(tmp_path_factory.mktemp("ref") / "CUB_hybrid_lam_0.4_gamma_0.1_123.pt", module)
    return path, module


@pytest.fixture(scope="module")
def sop_file(networks, tmp_path_factory):
    torch.manual_seed(1)
    module = _randomise(networks.SOP_Network(embedding_size=64), 2).eval()
    path = _save_reference_file(tmp_path_factory.mktemp("ref") / "SOP_hybrid.pt", module, wrap=True)
    return path, module


def _batch(seed: int = 0) -> torch.Tensor:
    # 64 x 64 leaves a 2 x 2 map before pooling: max and average pooling give different results
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("which,dataset", [("cub", "cub"), ("sop", "inshop")])
def test_import_gives_the_original_embeddings(which, dataset, cub_file, sop_file, tmp_path):
    from ctxsim.reference.import_reference import import_reference
    from ctxsim.train.checkpoint import load_checkpoint, load_checkpoint_model

    path, original = cub_file if which == "cub" else sop_file
    out = tmp_path / "imported.pt"
    res = import_reference(path, dataset, out=out)
    assert res.network == ("CUB_Network" if which == "cub" else "SOP_Network")
    assert (res.pooling, res.layernorm) == (("max", True) if which == "cub" else ("avg", False))
    assert res.max_abs_diff <= TOLERANCE
    model, cfg = load_checkpoint_model(out)
    assert cfg.dataset == dataset and cfg.loss == "hybrid" and cfg.resolution == 256
    assert cfg.model.embedding_size == original.remap.out_features
    assert (cfg.model.pooling, cfg.model.layernorm) == (res.pooling, res.layernorm)
    x = _batch()
    with torch.no_grad():
        want = original(x)
        got = model(x)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= TOLERANCE
    # the pooling really matters on this input (the check above would catch a swapped pool)
    other = nn.AdaptiveAvgPool2d((1, 1)) if which == "cub" else nn.AdaptiveMaxPool2d((1, 1))
    saved = original.backbone.avgpool
    try:
        original.backbone.avgpool = other
        with torch.no_grad():
            assert (original(x) - want).abs().max().item() > 1e-3
    finally:
        original.backbone.avgpool = saved
    src = load_checkpoint(out)["source"]
    assert src["kind"] == "reference-release" and src["network"] == res.network
    assert src["wrapped_in_dataparallel"] == (which == "sop")
    assert src["n_losses"] == 5


def test_reader_extracts_every_tensor(cub_file):
    from ctxsim.reference.import_reference import read_reference

    path, original = cub_file
    ref = read_reference(path)
    want = original.state_dict()
    assert set(ref.state_dict) == set(want)
    for k, v in want.items():
        assert ref.state_dict[k].dtype == v.dtype and torch.equal(ref.state_dict[k], v), k
    assert ref.loss_list == [1.0 / (i + 1) for i in range(5)]
    assert ref.layernorm and ref.layernorm_eps == 1e-5 and ref.pooling == "max"


def test_dataset_must_match_the_network(sop_file, tmp_path):
    from ctxsim.errors import CtxsimError
    from ctxsim.reference.import_reference import import_reference

    with pytest.raises(CtxsimError, match="SOP_Network.*CUB_Network"):
        import_reference(sop_file[0], "cub", out=tmp_path / "x.pt")
    with pytest.raises(CtxsimError, match="reference models exist for"):
        import_reference(sop_file[0], "digits", out=tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


# ---- refusals ------------------------------------------------------------------------------------


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_os_system_pickle_is_refused_and_not_run(tmp_path):
    from ctxsim.reference.unpickle import ReferenceFormatError, restricted_load

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save((_Evil(marker), [0.5], None), path)
    with pytest.raises(ReferenceFormatError) as ei:
        restricted_load(path)
    msg = str(ei.value)
    assert "\n" not in msg and "system" in msg and "evil.pt" in msg
    assert not marker.exists()


def test_other_module_classes_are_refused(networks, tmp_path):
    from ctxsim.reference.unpickle import ReferenceFormatError, restricted_load

    path = tmp_path / "conv1d.pt"
    torch.save((nn.Conv1d(2, 2, 3), [], None), path)
    with pytest.raises(ReferenceFormatError, match=r"torch\.nn\.modules\.conv\.Conv1d"):
        restricted_load(path)
    # a class merely named like an allowed one, in another module
    fake = types.ModuleType("not_networks")

    class CUB_Network(nn.Module):
        pass

    CUB_Network.__module__ = "not_networks"
    CUB_Network.__qualname__ = "CUB_Network"
    fake.CUB_Network = CUB_Network
    sys.modules["not_networks"] = fake
    try:
        torch.save((CUB_Network(), [], None), tmp_path / "fake.pt")
    finally:
        sys.modules.pop("not_networks")
    with pytest.raises(ReferenceFormatError, match=r"not_networks\.CUB_Network"):
        restricted_load(tmp_path / "fake.pt")


def test_hand_made_pickle_with_builtins_eval_is_refused(tmp_path):
    """A zip archive shaped like torch's, whose data.pkl calls builtins.eval via GLOBAL + REDUCE."""
    from ctxsim.reference.unpickle import ReferenceFormatError, restricted_load

    marker = tmp_path / "ran"
    payload = (b"\x80\x02cbuiltins\neval\nq\x00X" + len(f"open('{marker}','w')".encode()).to_bytes(4, "little")
               + f"open('{marker}','w')".encode() + b"\x85R.")
    path = tmp_path / "hand.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hand/data.pkl", payload)
        z.writestr("hand/byteorder", "little")
    with pytest.raises(ReferenceFormatError, match=r"builtins\.eval"):
        restricted_load(path)
    assert not marker.exists()


def test_not_a_torch_file(tmp_path):
    from ctxsim.reference.unpickle import ReferenceFormatError, restricted_load

    p = tmp_path / "notes.pt"
    p.write_text("hello")
    with pytest.raises(ReferenceFormatError, match="not a torch zip archive"):
        restricted_load(p)
    q = tmp_path / "other.zip"
    with zipfile.ZipFile(q, "w") as z:
        z.writestr("a.txt", "x")
    with pytest.raises(ReferenceFormatError, match="no data.pkl"):
        restricted_load(q)


def test_truncated_storage_is_refused(cub_file, tmp_path):
    from ctxsim.reference.unpickle import ReferenceFormatError, restricted_load

    src = zipfile.ZipFile(cub_file[0])
    dst = tmp_path / "cut.pt"
    with zipfile.ZipFile(dst, "w") as z:
        for n in src.namelist():
            data = src.read(n)
            if n.endswith("/data/0"):
                data = data[: len(data) // 2]
            z.writestr(n, data)
    with pytest.raises(ReferenceFormatError, match="storage 0"):
        restricted_load(dst)


def test_cli_refuses_with_one_line(tmp_path):
    from typer.testing import CliRunner

    from ctxsim.cli.main import app

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save((_Evil(marker), [0.5], None), path)
    r = CliRunner().invoke(app, ["import-reference", str(path), "--dataset", "cub"])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "system" in lines[0]
    assert "Traceback" not in r.output and not marker.exists()
    r = CliRunner().invoke(app, ["import-reference", str(tmp_path / "missing.pt"), "--dataset", "cub"])
    assert r.exit_code == 4 and "no such file" in r.output


def test_cli_import_eval_record_compare(cub_file, tmp_path):
    """import-reference --eval on a tiny CUB tree: recorded as a done job that compare lists."""
    from typer.testing import CliRunner

    from ctxsim.cli.main import app
    from ctxsim.data.fake import make_fake_benchmark

    root = tmp_path / "data"
    make_fake_benchmark("cub", root, train_classes=2, test_classes=2, per_class=2, size=(40, 32))
    db = tmp_path / "exp.db"
    out = tmp_path / "cub.ctxsim.pt"
    r = CliRunner().invoke(app, ["import-reference", str(cub_file[0]), "--dataset", "cub", "--out", str(out),
                                 "--eval", "--root", str(root), "--device", "cpu", "--db", str(db), "--json"])
    assert r.exit_code == 0, r.output
    import json

    res = json.loads(r.stdout)
    assert res["checkpoint"] == str(out) and out.is_file()
    assert set(res["metrics"]) >= {"R@1", "R@2", "R@4", "R@8", "MAP@R"}
    assert all(0.0 <= v <= 1.0 for v in res["metrics"].values())
    job = res["job_id"]
    r = CliRunner().invoke(app, ["compare", str(job), "--db", str(db), "--format", "json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    r1 = [row for row in rows if row["metric"] == "R@1"]
    assert len(r1) == 1 and r1[0]["dataset"] == "cub" and r1[0]["loss"] == "hybrid"
    assert abs(r1[0]["final_mean"] - 100 * res["metrics"]["R@1"]) < 1e-6
    assert r1[0]["test_selected"] == 1  # main.py chose the released model on the test set
    assert r1[0]["paper"] is not None and r1[0]["delta"] == pytest.approx(r1[0]["final_mean"] - r1[0]["paper"])


def test_enabled_grad_scaler_state_is_read_inertly(tmp_path):
    """An enabled scaler (as saved on a GPU) pickles a defaultdict of a torch function: read as data."""
    from ctxsim.reference.unpickle import Stub, restricted_load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scaler = torch.amp.GradScaler("cpu")
    assert scaler.is_enabled()
    torch.save(([0.25], scaler), tmp_path / "scaler.pt")
    losses, st = restricted_load(tmp_path / "scaler.pt")
    assert losses == [0.25] and isinstance(st, Stub) and st.short_name == "GradScaler"
    assert st.state["_enabled"] is True and st.state["_init_scale"] == 65536.0
    assert dict(st.state["_per_optimizer_states"]) == {}
