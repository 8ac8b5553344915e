"""The fast recipe pipelines reproduce torchvision's reference transforms (reference-implementation §3.1/§3.2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ctxsim.data.transforms import (
    FastImagePipeline,
    Recipe,
    draft_factor,
    pil_rgb_loader,
    recipe_transforms,
    reference_transform,
)
from ctxsim.errors import ConfigError

torch.set_num_threads(1)


def _jpeg(path, w, h, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((w, h), Image.BICUBIC)
    img.save(path, "JPEG", quality=92)
    return path


def test_recipes_match_the_reference_table():
    tr, ev = recipe_transforms("cub", 256)
    assert (tr.kind, tr.size, tr.scale, tr.pre_resize) == ("rrc", 256, (0.16, 1.0), None)
    assert (ev.resize, ev.size, ev.square_warp) == (288, 256, False)
    tr, ev = recipe_transforms("sop", 256)
    assert tr.pre_resize == 288 and ev.square_warp and ev.resize == 288 and ev.size == 256
    tr, ev = recipe_transforms("inat", 256)
    assert tr.size == 224 and ev.resize == 256 and ev.size == 224
    tr, ev = recipe_transforms("cars", 224)
    assert tr.scale == (0.12, 1.0) and tr.size == 224 and (ev.resize, ev.size) == (256, 224)
    assert recipe_transforms("cub", 224)[0].scale == (0.16, 1.0)
    assert recipe_transforms("sop", 224, xform_scale=0.3)[0].scale == (0.3, 1.0)
    with pytest.raises(ConfigError):
        recipe_transforms("cub", 300)


@pytest.mark.parametrize("dataset,res,train", [("cub", 256, True), ("cub", 256, False), ("sop", 256, True),
                                               ("sop", 256, False), ("inat", 256, True), ("cars", 224, True),
                                               ("cars", 224, False)])
def test_fast_pipeline_equals_torchvision_up_to_resampling(tmp_path, dataset, res, train):
    """Same seed -> same crop and flip; pixels within resampling noise of the PIL reference."""
    path = _jpeg(tmp_path / "a.jpg", 500, 375)
    rec = recipe_transforms(dataset, res)[0 if train else 1]
    fast, ref = FastImagePipeline(rec), reference_transform(rec)
    for seed in range(4):
        torch.manual_seed(seed)
        a = fast(str(path))
        torch.manual_seed(seed)
        b = ref(pil_rgb_loader(path))
        assert a.shape == b.shape == (3, rec.size, rec.size) and a.dtype == torch.float32 and a.is_contiguous()
        # normalised units: one grey level is ~0.017; mean error well below that, no outliers
        err = (a - b).abs()
        assert err.mean() < 0.02 and err.max() < 0.25, (seed, float(err.mean()), float(err.max()))


def test_draft_is_used_only_with_2x_margin(tmp_path):
    assert draft_factor((500, 375), (256, 256)) == 1
    assert draft_factor((2000, 1500), (288, 288)) == 2
    assert draft_factor((4000, 3000), (288, 288)) == 4
    assert draft_factor((1100, 1100), (256, 256)) == 2
    assert draft_factor((1000, 1100), (256, 256)) == 1
    # a large JPEG: the drafted decode still matches the full decode result closely
    path = _jpeg(tmp_path / "big.jpg", 1600, 1200, seed=1)
    rec = Recipe("center", 256, resize=288, flip=False)
    torch.manual_seed(0)
    a = FastImagePipeline(rec, draft=True)(str(path))
    b = FastImagePipeline(rec, draft=False)(str(path))
    c = reference_transform(rec)(pil_rgb_loader(path))
    assert (a - c).abs().mean() < 0.03 and (b - c).abs().mean() < 0.02


def test_non_rgb_and_png_inputs(tmp_path):
    g = tmp_path / "g.png"
    Image.fromarray(np.full((40, 60), 128, np.uint8), mode="L").save(g)
    rec = Recipe("rrc", 32, scale=(0.5, 1.0))
    out = FastImagePipeline(rec)(str(g))
    assert out.shape == (3, 32, 32)
    # a uniform grey image stays uniform after crop/flip/normalise
    assert torch.allclose(out[0], out[0, 0, 0].expand(32, 32), atol=1e-5)
