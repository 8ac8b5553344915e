"""Image pipelines of the paper's recipes (reference-implementation §3.1 / §3.2), decoded fast.

Each pipeline turns an image file (or PIL image) into a normalised float32 CHW tensor. Geometry and
random draws follow torchvision's ``RandomResizedCrop`` / ``Resize`` / ``CenterCrop`` /
``RandomHorizontalFlip`` exactly (same torch RNG calls in the same order, same integer sizes), but the
work is done differently:

* JPEG files are decoded in PIL *draft* mode (DCT-domain down-scaling by 2, 4 or 8) only when the
  first resample would still shrink the drafted pixels by at least 2x, so the result cannot change
  meaningfully (the reference resize dominates the filtering);
* resampling runs on uint8 channels-last tensors (torch's antialiased bilinear kernel, within one grey
  level of PIL's) instead of PIL, and ToTensor + Normalize are fused into one pass.

``reference_transform(...)`` builds the plain torchvision ``Compose`` of the same recipe; tests and
``benchmarks/data.py`` compare the two.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _resized_short_side(w: int, h: int, size: int) -> Tuple[int, int]:
    """torchvision ``Resize(int)``: short side -> size, long side truncated (returns (w, h))."""
    if w <= h:
        return size, int(size * h / w)
    return int(size * w / h), size


def _center_box(w: int, h: int, size: int) -> Tuple[int, int]:
    """Top/left offsets of torchvision ``CenterCrop(size)`` on a (w, h) image."""
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return top, left


def _rrc_params(w: int, h: int, scale: Tuple[float, float], ratio: Tuple[float, float]) -> Tuple[int, int, int, int]:
    """The same draws as torchvision ``RandomResizedCrop.get_params`` (torch RNG): (top, left, h, w)."""
    area = h * w
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        cw = int(round(math.sqrt(target_area * aspect_ratio)))
        ch = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            i = torch.randint(0, h - ch + 1, size=(1,)).item()
            j = torch.randint(0, w - cw + 1, size=(1,)).item()
            return i, j, ch, cw
    in_ratio = float(w) / float(h)
    if in_ratio < min(ratio):
        cw = w
        ch = int(round(cw / min(ratio)))
    elif in_ratio > max(ratio):
        ch = h
        cw = int(round(ch * max(ratio)))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def draft_factor(src: Tuple[int, int], dst: Tuple[int, int]) -> int:
    """Largest JPEG draft reduction (1, 2, 4, 8) keeping the source >= 2x the resample target."""
    k = 1
    while k < 8 and src[0] // (2 * k) >= 2 * dst[0] and src[1] // (2 * k) >= 2 * dst[1]:
        k *= 2
    return k


@dataclass(frozen=True)
class Recipe:
    """One pipeline: ``kind`` is "rrc" (train) or "center" (eval); sizes follow reference-implementation §3."""

    kind: str  # "rrc" | "center"
    size: int  # output side (square)
    scale: Tuple[float, float] = (0.08, 1.0)
    ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    pre_resize: Optional[int] = None  # rrc: Resize(short side) first (SOP/In-Shop 256 train)
    resize: Optional[int] = None  # center: Resize before CenterCrop
    square_warp: bool = False  # center: Resize((r, r)) instead of the short side
    flip: bool = True
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD


def recipe_transforms(dataset: str, resolution: int, xform_scale: Optional[float] = None,
                      rrc_ratio: Optional[Sequence[float]] = None) -> Tuple[Recipe, Recipe]:
    """(train, eval) recipes of a benchmark at 224 (reference-implementation §3.1) or 256 (§3.2). ``rrc_ratio``
    replaces the training crop's aspect range (None: torchvision's (3/4, 4/3); the reference profile
    passes main.py's (0.75, 1.33), docs/profiles.md)."""
    train, evl = _recipe_transforms(dataset, resolution, xform_scale)
    if rrc_ratio is not None:
        lo, hi = (float(x) for x in rrc_ratio)
        train = dataclasses.replace(train, ratio=(lo, hi))
    return train, evl


def _recipe_transforms(dataset: str, resolution: int, xform_scale: Optional[float]) -> Tuple[Recipe, Recipe]:
    if resolution == 224:
        # 224x224/train.py: RRC(224, scale=(xform_scale, 1)) + flip; eval Resize(256) + CenterCrop(224)
        default_scale = {"cub": 0.16, "cars": 0.12, "sop": 0.08}.get(dataset, 0.08)
        s = default_scale if xform_scale is None else float(xform_scale)
        return Recipe("rrc", 224, scale=(s, 1.0)), Recipe("center", 224, resize=256, flip=False)
    if resolution != 256:
        from ctxsim.errors import ConfigError

        raise ConfigError(f"resolution must be 224 or 256, got {resolution}")
    s = 0.16 if xform_scale is None else float(xform_scale)
    if dataset in ("cub", "cars"):
        return Recipe("rrc", 256, scale=(s, 1.0)), Recipe("center", 256, resize=288, flip=False)
    if dataset in ("sop", "inshop"):
        return (
            Recipe("rrc", 256, scale=(s, 1.0), pre_resize=288),
            Recipe("center", 256, resize=288, square_warp=True, flip=False),
        )
    if dataset == "inat":  # images pre-resized to short side 288; crops are 224 even in the 256 code
        return Recipe("rrc", 224, scale=(s, 1.0)), Recipe("center", 224, resize=256, flip=False)
    return Recipe("rrc", 256, scale=(s, 1.0)), Recipe("center", 256, resize=288, flip=False)


class FastImagePipeline:
    """Decodes an image file and applies a :class:`Recipe`; returns a normalised float32 CHW tensor."""

    def __init__(self, recipe: Recipe, draft: bool = True):
        self.recipe = recipe
        self.draft = draft
        self._mean = torch.tensor(recipe.mean, dtype=torch.float32).view(-1, 1, 1) * 255.0
        self._inv_std = 1.0 / (torch.tensor(recipe.std, dtype=torch.float32).view(-1, 1, 1) * 255.0)

    def __repr__(self) -> str:
        return f"FastImagePipeline({self.recipe}, draft={self.draft})"

    def __call__(self, img: Union[str, "Image.Image"]) -> torch.Tensor:
        if isinstance(img, (str, bytes)) or hasattr(img, "__fspath__"):
            img = Image.open(img)
        r = self.recipe
        w, h = img.size
        # 1. plan the geometry on the full-size image (these are the reference's random draws)
        if r.kind == "rrc":
            if r.pre_resize:
                pw, ph = _resized_short_side(w, h, r.pre_resize)
                target = (pw, ph)
            else:
                pw, ph = w, h
            top, left, ch, cw = _rrc_params(pw, ph, r.scale, r.ratio)
            if not r.pre_resize:
                target = None
                k = draft_factor((cw, ch), (r.size, r.size)) if self.draft else 1
            else:
                k = draft_factor((w, h), target) if self.draft else 1
        else:
            target = (r.resize, r.resize) if r.square_warp else _resized_short_side(w, h, r.resize)
            k = draft_factor((w, h), target) if self.draft else 1
        flip = r.flip and torch.rand(1).item() < 0.5
        # 2. decode, drafted where that cannot matter (reference-implementation §3: same crops, same sizes)
        if k > 1 and img.format == "JPEG":
            img.draft("RGB", (max(1, w // k), max(1, h // k)))
        if img.mode != "RGB":
            img = img.convert("RGB")
        else:
            img.load()
        dw, dh = img.size
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only numpy view; never written in place
            t = torch.from_numpy(np.asarray(img)).permute(2, 0, 1)
        sx, sy = dw / w, dh / h
        # 3. resample on uint8 channels-last tensors
        if r.kind == "rrc":
            if r.pre_resize:
                t = _resize_u8(t, target[1], target[0])
                t = _resize_u8(t[:, top:top + ch, left:left + cw], r.size, r.size)
            elif k > 1:
                # crop box mapped to the drafted pixels
                i0, j0 = int(round(top * sy)), int(round(left * sx))
                i1, j1 = min(dh, int(round((top + ch) * sy))), min(dw, int(round((left + cw) * sx)))
                t = _resize_u8(t[:, i0:max(i1, i0 + 1), j0:max(j1, j0 + 1)], r.size, r.size)
            else:
                t = _resize_u8(t[:, top:top + ch, left:left + cw], r.size, r.size)
        else:
            t = _resize_u8(t, target[1], target[0])
            top, left = _center_box(target[0], target[1], r.size)
            t = _crop(t, top, left, r.size)
        if flip:
            t = t.flip(-1)
        out = t.to(torch.float32, memory_format=torch.contiguous_format)
        out.sub_(self._mean).mul_(self._inv_std)
        return out


def _resize_u8(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Antialiased bilinear resize of a uint8 CHW tensor (torchvision's tensor Resize, without dispatch)."""
    if t.shape[-2] == h and t.shape[-1] == w:
        return t
    return torch.nn.functional.interpolate(t[None], size=(h, w), mode="bilinear", antialias=True,
                                           align_corners=False)[0]


def _crop(t: torch.Tensor, top: int, left: int, size: int) -> torch.Tensor:
    """torchvision CenterCrop semantics, padding with zeros when the image is smaller than the crop."""
    H, W = t.shape[-2:]
    if top >= 0 and left >= 0 and top + size <= H and left + size <= W:
        return t[:, top:top + size, left:left + size]
    from torchvision.transforms.v2 import functional as F

    return F.crop(t, top, left, size, size)


def reference_transform(recipe: Recipe):
    """The plain torchvision (PIL) Compose of a recipe, as the reference code builds it."""
    import torchvision.transforms as T

    ops = []
    if recipe.kind == "rrc":
        if recipe.pre_resize:
            ops.append(T.Resize(recipe.pre_resize))
        ops.append(T.RandomResizedCrop(recipe.size, scale=recipe.scale, ratio=recipe.ratio))
        if recipe.flip:
            ops.append(T.RandomHorizontalFlip())
    else:
        ops.append(T.Resize((recipe.resize, recipe.resize) if recipe.square_warp else recipe.resize))
        ops.append(T.CenterCrop(recipe.size))
    ops += [T.ToTensor(), T.Normalize(recipe.mean, recipe.std)]
    return T.Compose(ops)


def pil_rgb_loader(path) -> "Image.Image":
    """ImageFolder's loader: open + convert('RGB') (the plain baseline)."""
    with open(path, "rb") as f:
        img = Image.open(f)
        return img.convert("RGB")


class TensorAugment:
    """Small-data pipeline on uint8 CHW tensors: optional padded random crop (zero or edge padding)
    and flip, then normalise.

    Used by fashion-mnist, digits and synthetic (no recipe in the paper: a light augmentation).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], pad: int = 0, flip: bool = False,
                 out_size: Optional[int] = None, pad_mode: str = "constant"):
        self.pad, self.flip, self.out_size = int(pad), bool(flip), out_size
        # "replicate": shifted images keep their border colour (icons on white get no black strips)
        self.pad_mode = pad_mode
        self._mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1) * 255.0
        self._inv_std = 1.0 / (torch.tensor(std, dtype=torch.float32).view(-1, 1, 1) * 255.0)

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        if self.pad:
            H, W = t.shape[-2:]
            if self.pad_mode == "constant":
                p = torch.nn.functional.pad(t, (self.pad,) * 4)
            else:
                p = torch.nn.functional.pad(t[None].float(), (self.pad,) * 4, mode=self.pad_mode)[0].to(t.dtype)
            i = int(torch.randint(0, 2 * self.pad + 1, (1,)).item())
            j = int(torch.randint(0, 2 * self.pad + 1, (1,)).item())
            t = p[..., i:i + H, j:j + W]
        if self.flip and torch.rand(1).item() < 0.5:
            t = t.flip(-1)
        out = t.to(torch.float32).sub(self._mean).mul_(self._inv_std)
        if self.out_size and out.shape[-1] != self.out_size:
            out = torch.nn.functional.interpolate(out[None], size=(self.out_size, self.out_size),
                                                  mode="bilinear", align_corners=False, antialias=True)[0]
        return out.contiguous()
