"""data.decode=gpu: batched decode_jpeg + the recipe on the device agrees with the CPU pipeline
(FastImagePipeline without JPEG draft mode) to one grey level; the device code runs here on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ctxsim.data import build_data
from ctxsim.data.fake import make_fake_benchmark
from ctxsim.data.gpu_decode import DeviceTransform, ReadForDevice, check_decode, device_decoded_loader, encoded_dataset
from ctxsim.data.transforms import FastImagePipeline, Recipe, recipe_transforms
from ctxsim.errors import ConfigError, DataError

torch.set_num_threads(1)

RECIPES = [("cub", 224, 0), ("cub", 224, 1), ("cub", 256, 0), ("cub", 256, 1), ("sop", 256, 0), ("sop", 256, 1),
           ("inat", 256, 0)]


def _jpeg(path, w, h, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    arr = np.asarray(Image.fromarray(base).resize((w, h), Image.BICUBIC), dtype=np.int16)
    arr = np.clip(arr + rng.integers(-30, 31, arr.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, "JPEG", quality=90)
    return str(path)


def _grey_levels(a: torch.Tensor, b: torch.Tensor, rec: Recipe) -> torch.Tensor:
    """|a - b| of two normalised NCHW/CHW images, in grey levels."""
    std = torch.tensor(rec.std).view(-1, 1, 1) * 255.0
    return ((a - b) * std).abs()


def _both(rec: Recipe, paths, seed: int, device="cpu"):
    """(CPU pipeline batch, device batch) of the same files under the same seed."""
    torch.manual_seed(seed)
    cpu = torch.stack([FastImagePipeline(rec, draft=False)(p) for p in paths])
    torch.manual_seed(seed)
    samples = [ReadForDevice(rec)(p) for p in paths]
    return cpu, DeviceTransform(rec, device)(samples).cpu()


@pytest.mark.parametrize("dataset,res,which", RECIPES)
def test_device_path_matches_cpu_pipeline_to_one_grey_level(tmp_path, dataset, res, which):
    rec = recipe_transforms(dataset, res)[which]
    # mixed sizes in one batch (landscape, portrait, smaller than the crop), one greyscale JPEG
    paths = [_jpeg(tmp_path / "a.jpg", 500, 375, 0), _jpeg(tmp_path / "b.jpg", 333, 500, 1),
             _jpeg(tmp_path / "c.jpg", 200, 150, 2), _jpeg(tmp_path / "d.jpg", 640, 480, 3, mode="L")]
    for seed in range(3):  # the train recipes' crops and flips differ per seed; the draws are the same
        cpu, dev = _both(rec, paths, seed)
        assert dev.shape == cpu.shape == (4, 3, rec.size, rec.size) and dev.dtype == torch.float32
        err = _grey_levels(dev, cpu, rec)
        # torch's uint8 resize (the CPU side) quantises its weights: ~15% of pixels are one level off
        # per resampling, unbiased; after two (SOP's pre-resize), a rare pixel (< 0.1%) is two off
        if rec.pre_resize:
            assert float(err.max()) <= 2.0 + 1e-3 and float((err > 1.0 + 1e-3).float().mean()) < 1e-3
            assert float(err.mean()) < 0.4
        else:
            assert float(err.max()) <= 1.0 + 1e-3, (seed, float(err.max()))
            assert float(err.mean()) < 0.25
        signed = ((dev - cpu) * (torch.tensor(rec.std).view(-1, 1, 1) * 255.0)).mean()
        assert abs(float(signed)) < 0.05


def test_worker_draws_the_cpu_pipelines_geometry(tmp_path):
    """Same seed, same torch RNG calls: the crop box and flip of the worker are FastImagePipeline's."""
    rec = recipe_transforms("cub", 256)[0]
    path = _jpeg(tmp_path / "a.jpg", 500, 375)
    torch.manual_seed(5)
    s = ReadForDevice(rec)(path)
    after_read = torch.rand(1).item()
    torch.manual_seed(5)
    FastImagePipeline(rec, draft=False)(path)
    assert torch.rand(1).item() == after_read  # the RNG advanced by exactly the same draws
    assert s.encoded and s.size == (500, 375) and s.path == path


def test_png_and_cmyk_are_decoded_on_the_worker(tmp_path):
    rec = Recipe("rrc", 32, scale=(0.5, 1.0))
    png = tmp_path / "g.png"
    Image.fromarray(np.full((40, 60), 128, np.uint8), mode="L").save(png)
    cmyk = tmp_path / "k.jpg"
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).convert("CMYK").save(cmyk, "JPEG")
    paths = [str(png), str(cmyk), _jpeg(tmp_path / "a.jpg", 64, 48)]
    torch.manual_seed(0)
    samples = [ReadForDevice(rec)(p) for p in paths]
    assert [s.encoded for s in samples] == [False, False, True]
    cpu, dev = _both(rec, paths, 0)
    assert float(_grey_levels(dev, cpu, rec).max()) <= 1.0 + 1e-3


def test_loader_yields_the_cpu_loaders_batches(tmp_path):
    """Same batches, same worker seeding (a worker process here): the device loader's images are the
    CPU loader's to one grey level, labels identical."""
    make_fake_benchmark("cub", tmp_path, train_classes=3, test_classes=2, per_class=4, size=(120, 90))
    data = build_data("cub", root=tmp_path, resolution=224, draft=False)
    batches = [[0, 1, 4, 5], [8, 9, 2, 3]]
    kw = dict(batch_sampler=batches, num_workers=1, generator=torch.Generator().manual_seed(3))
    cpu = list(DataLoader(data.train, **kw))
    kw["generator"] = torch.Generator().manual_seed(3)
    dev = list(device_decoded_loader(data.train, "cpu", pin_memory=True, **kw))
    assert len(dev) == 2
    for (ci, cl), (di, dl) in zip(cpu, dev):
        assert torch.equal(cl, dl)
        assert float(_grey_levels(di, ci, data.train.transform.recipe).max()) <= 1.0 + 1e-3


def test_bad_input_is_named(tmp_path):
    info = make_fake_benchmark("cub", tmp_path, train_classes=2, test_classes=2, per_class=2, size=(64, 48))
    data = build_data("cub", root=tmp_path, resolution=224)
    enc = encoded_dataset(data.train)
    assert enc.transform is not data.train.transform and isinstance(data.train.transform, FastImagePipeline)
    bad = data.train.path(1)
    with open(bad, "wb") as f:
        f.write(b"not a jpeg" * 10)
    with pytest.raises(DataError, match=r"cannot read image .*[.]jpg"):
        enc[1]
    # a JPEG header followed by a broken scan passes the worker and fails on the device, named
    good = open(data.train.path(0), "rb").read()
    sos = good.index(b"\xff\xda")
    with open(bad, "wb") as f:
        f.write(good[: sos + 12] + b"\xff\x00" * 8)
    sample, _ = enc[1]
    tf = DeviceTransform(data.train.transform.recipe, "cpu")
    with pytest.raises(DataError, match="cannot decode image"):
        tf([enc[0][0], sample])
    _ = info


def test_decode_key_checks():
    assert check_decode("cpu") == "cpu" and check_decode("gpu", torch.device("cuda")) == "gpu"
    with pytest.raises(ConfigError, match="data.decode must be one of cpu, gpu"):
        check_decode("nvjpeg")
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        check_decode("gpu", torch.device("cpu"))
    small = build_data("synthetic")
    with pytest.raises(ConfigError, match="JPEG benchmarks"):
        encoded_dataset(small.train)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dataset,res,which", RECIPES)
def test_gpu_decode_on_cuda_matches_cpu_pipeline(tmp_path, dataset, res, which):
    """nvJPEG's IDCT is not libjpeg's: allow two grey levels at a pixel, a small mean."""
    rec = recipe_transforms(dataset, res)[which]
    paths = [_jpeg(tmp_path / "a.jpg", 500, 375, 0), _jpeg(tmp_path / "b.jpg", 333, 500, 1),
             _jpeg(tmp_path / "d.jpg", 640, 480, 3, mode="L")]
    cpu, dev = _both(rec, paths, 0, device="cuda")
    err = _grey_levels(dev, cpu, rec)
    assert float(err.max()) <= 2.0 + 1e-3 and float(err.mean()) < 0.25, (float(err.max()), float(err.mean()))


def _fake_cub_config(root, decode: str, device: str):
    from ctxsim.train import recipe

    make_fake_benchmark("cub", root, train_classes=3, test_classes=2, per_class=4, size=(120, 90))
    return recipe("cub", "hybrid", 224).with_overrides(
        root=str(root), device=device, epochs=1, max_steps_per_epoch=2, batch_size=8, num_workers=0,
        sampler="m_per_class", sampler_kw={}, eval_every=0, model={"arch": "tiny", "backbone_weights": None},
    ).with_sets([f"data.decode={decode}"])


def test_config_key_and_the_cpu_refusal(tmp_path):
    from ctxsim.train import Trainer, recipe
    from ctxsim.train.events import NullSink

    assert recipe("cub", "hybrid", 256).with_sets(["data.decode=gpu"]).data_kw == {"decode": "gpu"}
    with pytest.raises(ConfigError, match="data.decode must be one of cpu, gpu"):
        recipe("cub", "hybrid", 256).with_sets(["data.decode=nvjpeg"])
    cfg = _fake_cub_config(tmp_path, "gpu", "cpu")
    run = Trainer(cfg, NullSink(), None, torch.device("cpu"), None)
    run.build()  # data.decode passes through build_data untouched
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        run._train_loader([[0, 1, 4, 5]], 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fit_with_gpu_decode_on_cuda(tmp_path):
    from ctxsim.train import fit

    res = fit(_fake_cub_config(tmp_path, "gpu", "cuda"), device="cuda")
    assert res.status == "done" and res.steps == 2
