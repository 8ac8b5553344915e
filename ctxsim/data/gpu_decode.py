"""JPEG decoding on the GPU for the training loader (``data.decode=gpu``): the recipe pipelines of
docs/reference-implementation.md §3.1 / §3.2, decoded and transformed on the device.

With ``data.decode=cpu`` (the default) each loader worker decodes and transforms its images
(:class:`~ctxsim.data.transforms.FastImagePipeline`). With ``gpu`` the workers only read each file's
bytes and draw the sample's random geometry (the same torch RNG calls, in the same order, as the CPU
pipeline, so a seeded worker draws the same crops and flips); the main process then decodes the whole
batch at once with ``torchvision.io.decode_jpeg(list_of_tensors, device=...)`` and applies the recipe
on that device: resize, crop, flip, normalise, with the CPU pipeline's semantics (torchvision's
``RandomResizedCrop`` / ``Resize`` / ``CenterCrop`` geometry, antialiased bilinear resampling in float,
rounded to whole grey levels as the CPU's uint8 resize is). The device always decodes at full size (no
JPEG draft mode), so it matches ``FastImagePipeline(recipe, draft=False)`` to one grey level (the
SOP / In-Shop 256 train recipe resamples twice: a rare pixel, < 0.1%, is two levels off).

Files that are not RGB or greyscale JPEGs (PNG, CMYK JPEG) are decoded by PIL on the worker and only
resampled on the device. The device code runs on any torch device; the tests run it on the CPU.
"""

from __future__ import annotations

import copy
import io
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ctxsim.data.transforms import FastImagePipeline, Recipe, _center_box, _crop, _resized_short_side, _rrc_params
from ctxsim.errors import ConfigError, DataError, one_line

DECODES = ("cpu", "gpu")  # values of data.decode (keep in sync with ctxsim.train.config)


@dataclass
class EncodedImage:
    """One training sample as a worker hands it over: file bytes (or a PIL-decoded HWC array when the
    file is not a plain JPEG) and the geometry drawn for it, in full-image pixels."""

    data: Union[bytes, np.ndarray]
    size: Tuple[int, int]  # (w, h) of the full image
    box: Tuple[int, int, int, int]  # rrc: (top, left, h, w) of the crop; center: unused
    flip: bool
    path: str = ""

    @property
    def encoded(self) -> bool:
        return isinstance(self.data, bytes)


def plan_geometry(recipe: Recipe, w: int, h: int) -> Tuple[Tuple[int, int, int, int], bool]:
    """The random draws of FastImagePipeline for a (w, h) image, in the same order: (crop box, flip)."""
    box = (0, 0, h, w)
    if recipe.kind == "rrc":
        pw, ph = _resized_short_side(w, h, recipe.pre_resize) if recipe.pre_resize else (w, h)
        box = _rrc_params(pw, ph, recipe.scale, recipe.ratio)
    flip = recipe.flip and torch.rand(1).item() < 0.5
    return box, bool(flip)


class ReadForDevice:
    """The worker side: reads a file and draws its geometry (a drop-in for the dataset's transform)."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe

    def __repr__(self) -> str:
        return f"ReadForDevice({self.recipe})"

    def __call__(self, path) -> EncodedImage:
        with open(path, "rb") as f:
            raw = f.read()
        img = Image.open(io.BytesIO(raw))  # the header only: size, format, mode
        w, h = img.size
        box, flip = plan_geometry(self.recipe, w, h)
        if img.format == "JPEG" and img.mode in ("RGB", "L"):
            return EncodedImage(raw, (w, h), box, flip, str(path))
        return EncodedImage(np.asarray(img.convert("RGB")), (w, h), box, flip, str(path))


def collate_encoded(batch: Sequence[Tuple[EncodedImage, int]]) -> Tuple[List[EncodedImage], torch.Tensor]:
    """DataLoader collate: the samples as a list (they differ in size) and the labels as a tensor."""
    return [b[0] for b in batch], torch.as_tensor([int(b[1]) for b in batch], dtype=torch.long)


def _resize_f(t: torch.Tensor, h: int, w: int, whole_levels: bool = True) -> torch.Tensor:
    """Antialiased bilinear resize of a float CHW image holding grey levels, rounded back to whole
    levels (what the CPU pipeline's uint8 resize does; CUDA has no uint8 antialiased kernel)."""
    if t.shape[-2] == h and t.shape[-1] == w:
        return t
    out = torch.nn.functional.interpolate(t[None], size=(h, w), mode="bilinear", antialias=True,
                                          align_corners=False)[0]
    return out.round_().clamp_(0.0, 255.0) if whole_levels else out


class DeviceTransform:
    """The device side: decodes a list of :class:`EncodedImage` in one batch and applies the recipe;
    returns a normalised float32 NCHW tensor on ``device``."""

    def __init__(self, recipe: Recipe, device: Union[str, torch.device] = "cuda"):
        self.recipe = recipe
        self.device = torch.device(device)
        mean = torch.tensor(recipe.mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        std = torch.tensor(recipe.std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self._mean, self._inv_std = mean * 255.0, 1.0 / (std * 255.0)

    def decode(self, samples: Sequence[EncodedImage]) -> List[torch.Tensor]:
        """uint8 CHW images on the device, full size, RGB."""
        from torchvision.io import ImageReadMode, decode_jpeg

        out: List[Optional[torch.Tensor]] = [None] * len(samples)
        enc = [i for i, s in enumerate(samples) if s.encoded]
        if enc:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # frombuffer on immutable bytes: never written
                warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 points to TorchCodec
                datas = [torch.frombuffer(samples[i].data, dtype=torch.uint8) for i in enc]
                try:
                    decoded = decode_jpeg(datas, mode=ImageReadMode.RGB, device=self.device)
                except RuntimeError:  # one bad file fails the batch: find it
                    decoded = [self._decode_one(d, samples[i].path) for d, i in zip(datas, enc)]
            for i, t in zip(enc, decoded):
                out[i] = t
        for i, s in enumerate(samples):
            if not s.encoded:
                out[i] = torch.from_numpy(np.ascontiguousarray(s.data)).permute(2, 0, 1).to(self.device)
        return out  # type: ignore[return-value]

    def _decode_one(self, data: torch.Tensor, path: str) -> torch.Tensor:
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError as e:
            raise DataError(f"cannot decode image {path}: {one_line(e)}") from None

    def geometry(self, t: torch.Tensor, s: EncodedImage) -> torch.Tensor:
        """Resize/crop/flip of one decoded image (float grey levels), FastImagePipeline(draft=False)'s."""
        r = self.recipe
        w, h = s.size
        t = t.to(torch.float32)
        if r.kind == "rrc":
            top, left, ch, cw = s.box
            if r.pre_resize:
                pw, ph = _resized_short_side(w, h, r.pre_resize)
                t = _resize_f(t, ph, pw, whole_levels=False)  # rounded once, at the end: closer to exact
            t = _resize_f(t[:, top:top + ch, left:left + cw], r.size, r.size)
        else:
            tw, th = (r.resize, r.resize) if r.square_warp else _resized_short_side(w, h, r.resize)
            t = _resize_f(t, th, tw)
            top, left = _center_box(tw, th, r.size)
            t = _crop(t, top, left, r.size)
        if s.flip:
            t = t.flip(-1)
        return t

    def __call__(self, samples: Sequence[EncodedImage]) -> torch.Tensor:
        images = [self.geometry(t, s) for t, s in zip(self.decode(samples), samples)]
        batch = torch.stack(images)
        return batch.sub_(self._mean).mul_(self._inv_std)


def device_recipe(dataset) -> Recipe:
    """The recipe of a dataset built with the CPU pipeline; ConfigError if it has none (small sets)."""
    tf = getattr(dataset, "transform", None)
    if not isinstance(tf, FastImagePipeline):
        raise ConfigError("data.decode=gpu applies to the JPEG benchmarks (cub, cars, sop, inat, inshop) only")
    return tf.recipe


def encoded_dataset(dataset):
    """A shallow copy of an image-list dataset whose items are (EncodedImage, label) (bad-image
    handling and its shared counter included)."""
    rec = device_recipe(dataset)
    out = copy.copy(dataset)
    out.transform = ReadForDevice(rec)
    return out


class DeviceDecodedLoader:
    """Iterates (images on the device, labels on the device) over a DataLoader of encoded samples."""

    def __init__(self, loader: DataLoader, transform: DeviceTransform):
        self.loader = loader
        self.transform = transform

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        dev = self.transform.device
        for samples, labels in self.loader:
            yield self.transform(samples), labels.to(dev, non_blocking=True)


def device_decoded_loader(dataset, device: Union[str, torch.device], **loader_kw: Any) -> DeviceDecodedLoader:
    """The ``data.decode=gpu`` counterpart of ``DataLoader(dataset, **loader_kw)``: same batches, same
    worker seeding, images decoded and transformed on ``device``. ``collate_fn`` and ``pin_memory``
    are set here."""
    loader_kw.pop("pin_memory", None)
    loader = DataLoader(encoded_dataset(dataset), collate_fn=collate_encoded, pin_memory=False, **loader_kw)
    return DeviceDecodedLoader(loader, DeviceTransform(device_recipe(dataset), device))


def check_decode(value: str, device: Optional[torch.device] = None) -> str:
    """Validates a data.decode value (and that gpu decoding has a CUDA device to run on)."""
    if value not in DECODES:
        raise ConfigError(f"data.decode must be one of {', '.join(DECODES)}; got {value!r}")
    if value == "gpu" and device is not None and device.type != "cuda":
        raise ConfigError("data.decode=gpu needs a CUDA device (use data.decode=cpu)")
    return value


__all__ = ["DECODES", "EncodedImage", "ReadForDevice", "DeviceTransform", "DeviceDecodedLoader", "collate_encoded",
           "device_decoded_loader", "encoded_dataset", "plan_geometry", "check_decode"]
