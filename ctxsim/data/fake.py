"""Tiny generated trees in the exact reference layouts (reference-implementation §4.1), for tests and smoke runs.

``make_fake_benchmark("cub", root)`` writes a few generated JPEGs per class plus split files in the
reference formats, and returns the expected counts. Nothing here is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

HEADER = "image_id class_id super_class_id path\n"


def _jpeg(path: Path, rng: np.random.Generator, size: Tuple[int, int], cls: int) -> None:
    """A smooth class-tinted image with noise, saved as JPEG (w, h = size)."""
    w, h = size
    base = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    base[..., cls % 3] = 200
    img = Image.fromarray(base).resize((w, h), Image.BILINEAR)
    arr = np.asarray(img).astype(np.int16) + rng.integers(-15, 16, (h, w, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=85)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_fake_benchmark(name: str, root: os.PathLike, train_classes: int = 4, test_classes: int = 4,
                        per_class: int = 5, size: Tuple[int, int] = (64, 48), seed: int = 0,
                        supers: int = 3, write_splits: bool = True, inat_source: bool = False) -> Dict:
    """Writes a tiny ``name`` tree under the data root ``root``; returns expected counts and paths.

    Class ids follow the reference conventions: CUB/Cars train 1..Ctr then test; SOP class and super
    ids start at 1; iNat super labels 0.., class ids 0..; In-Shop train 0.., query/gallery after.
    With ``inat_source`` iNat images go to ``train_mini/`` (to be resized) instead of ``train_mini_resized/``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    out: Dict = {"name": name, "root": str(root), "files": []}
    n_all = train_classes + test_classes

    def img(rel_base: Path, rel: str, cls: int) -> str:
        _jpeg(rel_base / rel, rng, size, cls)
        out["files"].append(str(rel_base / rel))
        return rel

    if name in ("cub", "cars"):
        ddir = root / ("CUB_200_2011" if name == "cub" else "car196")
        rows = {"train": [], "test": []}
        k = 0
        for c in range(1, n_all + 1):
            split = "train" if c <= train_classes else "test"
            for j in range(per_class):
                k += 1
                rel = (f"images/{c:03d}.Bird_{c}/Bird_{c}_{j:04d}_{k}.jpg" if name == "cub" else f"car_ims/{k:06d}.jpg")
                img(ddir, rel, c)
                rows[split].append(f"{k - 1} {c} 1 {rel}\n")
        prefix = "cub200" if name == "cub" else "cars196"
        if write_splits:
            for split, r in rows.items():
                _write(ddir / f"{prefix}_{split}.txt", HEADER + "".join(r))
        out.update(ddir=str(ddir), images={"train": train_classes * per_class, "test": test_classes * per_class},
                   classes={"train": train_classes, "test": test_classes})
    elif name == "sop":
        ddir = root / "Stanford_Online_Products"
        names = ["bicycle", "cabinet", "chair", "coffee_maker", "fan", "kettle", "lamp", "mug", "sofa", "stapler",
                 "table", "toaster"][:supers]
        rows = {"train": [], "test": []}
        k = 0
        for c in range(1, n_all + 1):
            split = "train" if c <= train_classes else "test"
            s = (c - 1) % len(names) + 1
            for j in range(per_class):
                k += 1
                rel = f"{names[s - 1]}_final/{100000 + c}_{j}.JPG"
                img(ddir, rel, c)
                rows[split].append(f"{k} {c} {s} {rel}\n")
        for split, r in rows.items():
            _write(ddir / f"Ebay_{split}.txt", HEADER + "".join(r))
        out.update(ddir=str(ddir), images={"train": train_classes * per_class, "test": test_classes * per_class},
                   classes={"train": train_classes, "test": test_classes},
                   supers={"train": min(len(names), train_classes)})
    elif name == "inat":
        ddir = root / "train_mini_resized"
        img_dir = root / "train_mini" if inat_source else ddir
        kingdoms = ["Amphibians", "Animalia", "Arachnids", "Birds", "Fungi", "Insects"][:supers]
        rows = {"train": [], "test": []}
        for c in range(n_all):
            split = "train" if c < train_classes else "test"
            s = c % len(kingdoms)
            cdir = f"{c:05d}_Animalia_{kingdoms[s]}_genus_species{c}"
            for j in range(per_class):
                rel = f"{cdir}/{c:03d}{j:02d}abcd-0000-1111-2222-{j:012d}.jpg"
                img(img_dir, rel, c)
                rows[split].append(f"{rel},{s},{c}\n")
        if write_splits:
            target = root if inat_source else ddir
            for split, r in rows.items():
                _write(target / f"iNaturalist_{split}.txt", "".join(r))
        out.update(ddir=str(ddir), images={"train": train_classes * per_class, "test": test_classes * per_class},
                   classes={"train": train_classes, "test": test_classes},
                   supers={"train": min(len(kingdoms), train_classes)})
    elif name == "inshop":
        ddir = root / "inshop"
        rows = {"train": [], "query": [], "gallery": []}
        k = 0
        for c in range(n_all):
            split = "train" if c < train_classes else None
            for j in range(per_class):
                rel = f"img/WOMEN/Dresses/id_{c + 1:08d}/{j + 1:02d}_{j % 4 + 1}_front.jpg"
                img(ddir, rel, c)
                s = split or ("query" if j % 2 == 0 else "gallery")
                rows[s].append(f"{k} {c} 1 {rel}\n")
                k += 1
        if write_splits:
            for split, r in rows.items():
                _write(ddir / f"inshop_{split}.txt", HEADER + "".join(r))
        q = (per_class + 1) // 2
        out.update(ddir=str(ddir), images={"train": train_classes * per_class, "query": test_classes * q,
                                           "gallery": test_classes * (per_class - q)},
                   classes={"train": train_classes, "query": test_classes, "gallery": test_classes})
    else:
        raise ValueError(f"no fake layout for {name!r}")
    return out


def corrupt_file(path: os.PathLike, mode: str = "garbage") -> None:
    """Damages an image: 'garbage' (not an image at all) or 'truncate' (a JPEG cut in half)."""
    p = Path(path)
    if mode == "truncate":
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    else:
        p.write_bytes(b"this is not a jpeg" * 10)


def files_of(info: Dict) -> List[str]:
    return list(info["files"])


# -- icon themes (ctxsim.data.icons) ---------------------------------------------------------------

_THEME_INDEX = """[Icon Theme]
Name={name}
Inherits=hicolor
Directories=16x16/apps,48x48/apps,scalable/apps,symbolic/apps

[16x16/apps]
Size=16
Type=Fixed

[48x48/apps]
Size=48
Type=Fixed

[scalable/apps]
Size=48
MinSize=8
MaxSize=512
Type=Scalable

[symbolic/apps]
Size=16
MinSize=8
MaxSize=512
Type=Scalable
"""

_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="48" height="48" viewBox="0 0 48 48">'
        '<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="{fill}"/></svg>\n')


def _icon_png(path: Path, rng: np.random.Generator, size: int) -> None:
    """A drawing: one to three coloured rectangles on transparency (RGBA PNG)."""
    arr = np.zeros((size, size, 4), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = (int(v) for v in rng.integers(0, size // 2, 2))
        x1, y1 = x0 + int(rng.integers(size // 4, size // 2)), y0 + int(rng.integers(size // 4, size // 2))
        arr[y0:y1, x0:x1, :3] = rng.integers(0, 256, 3)
        arr[y0:y1, x0:x1, 3] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "RGBA").save(path)


def make_fake_icon_themes(base: os.PathLike, themes: int = 5, names: int = 16, seed: int = 0) -> Dict:
    """Writes ``themes`` small icon themes under ``base`` (a folder searched as an XDG ``icons`` dir)
    with every case ``ctxsim data prepare icons`` must handle, and returns what it should make of them.

    Each of ``names`` icon names ("icon-00", ...) is drawn by every theme as a 48 px PNG, except:
    theme 0 draws each icon as SVG (``scalable/``) and also a 16 px PNG that must not be picked;
    the last theme's ``icon-00`` is a symlink alias (skipped) and its ``icon-01`` is a byte copy of the
    previous theme's (an exact duplicate, removed); every theme also has ``*-symbolic`` icons (skipped)
    and ``only-two`` is drawn by two themes (dropped: too few). Plus a cursor theme and ``hicolor``,
    neither of them a design. Returns {"themes": [...], "classes": {name: expected theme list}}."""
    base = Path(base)
    rng = np.random.default_rng(seed)
    theme_names = [f"Fake{t}" for t in range(themes)]
    icon_names = [f"icon-{i:02d}" for i in range(names)]
    expected: Dict[str, List[str]] = {n: list(theme_names) for n in icon_names}
    for t, tn in enumerate(theme_names):
        _write(base / tn / "index.theme", _THEME_INDEX.format(name=tn))
        for n in icon_names:
            if t == 0:
                fill = "#%02x%02x%02x" % tuple(int(v) for v in rng.integers(0, 256, 3))
                x, y = (int(v) for v in rng.integers(0, 20, 2))
                _write(base / tn / "scalable" / "apps" / f"{n}.svg",
                       _SVG.format(x=x, y=y, w=int(rng.integers(12, 28)), h=int(rng.integers(12, 28)), fill=fill))
                _icon_png(base / tn / "16x16" / "apps" / f"{n}.png", rng, 16)
            else:
                _icon_png(base / tn / "48x48" / "apps" / f"{n}.png", rng, 48)
            _icon_png(base / tn / "symbolic" / "apps" / f"{n}-symbolic.png", rng, 16)
        if t < 2:
            _icon_png(base / tn / "48x48" / "apps" / "only-two.png", rng, 48)
    last = theme_names[-1]
    alias = base / last / "48x48" / "apps" / f"{icon_names[0]}.png"
    alias.unlink()
    os.symlink(f"{icon_names[2]}.png", alias)
    expected[icon_names[0]].remove(last)
    prev = base / theme_names[-2] / "48x48" / "apps" / f"{icon_names[1]}.png"
    (base / last / "48x48" / "apps" / f"{icon_names[1]}.png").write_bytes(prev.read_bytes())
    expected[icon_names[1]].remove(last)
    _write(base / "FakeCursors" / "index.theme", "[Icon Theme]\nName=FakeCursors\nInherits=core\n")
    _write(base / "hicolor" / "index.theme", _THEME_INDEX.format(name="hicolor"))
    _icon_png(base / "hicolor" / "48x48" / "apps" / f"{icon_names[3]}.png", rng, 48)
    return {"themes": theme_names, "classes": expected}
