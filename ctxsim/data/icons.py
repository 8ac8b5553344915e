"""``icons``: many classes, few images each, built from the freedesktop icon themes a machine has.

An icon name ("document-save", "folder-music") is a class; each independent theme's drawing of it
is one image of that class. That is the regime of the paper's SOP column (thousands of classes,
about five images each), on data Debian ships (docs/icons.md has the numbers and the themes).

Layout under the data root (``ctxsim data prepare icons`` writes it; nothing else is read):

    ROOT/icons/images/<icon-name>/<theme>.png   48x48 RGB, composited onto white
    ROOT/icons/train.txt, ROOT/icons/test.txt   class folders, one per line (line order = class id)
    ROOT/icons/manifest.json                    themes with their package versions, counts,
                                                duplicates removed, near-duplicate share, split sha256

Rules: themes are found in the XDG data dirs (``$XDG_DATA_HOME/icons``, ``$XDG_DATA_DIRS/icons``,
``~/.icons``); a family of themes (one Debian package: Papirus, Papirus-Dark, ...) contributes its base
theme only, the one with the most real icon files. Per (name, theme) one file is taken: the size
nearest 48 px, from the theme's ``index.theme`` directories. Symlinks (aliases), ``-symbolic``
names, symbolic and animation directories are skipped. SVG is rasterised by librsvg's
``rsvg-convert``. Exact duplicates within a class (the same rendered pixels: some themes copy
others' files) are removed, then classes with fewer than ``MIN_THEMES`` images are dropped. The
split is class-disjoint by a stable hash of the icon name (sha256), and the class order in each
split file is that hash order too, so ``val_classes`` (the last N training classes) is a hash-random
subset rather than the end of the alphabet.
"""

from __future__ import annotations

import configparser
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ctxsim.data.common import sha256_file
from ctxsim.errors import DataError, one_line

SUBDIR = "icons"
IMAGE_SIZE = 48  # stored images are IMAGE_SIZE x IMAGE_SIZE RGB
BACKGROUND = (255, 255, 255)
MIN_THEMES = 4  # a class needs drawings from at least this many themes
TEST_FRACTION = 0.5
NEAR_DUPLICATE = 0.98  # Pearson correlation of two images' pixels above which they count as near-duplicates
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
# Themes that are no design of their own: the fallback theme and the pointer to the default.
NOT_A_DESIGN = {"hicolor", "locolor", "default"}
# What `ctxsim data prepare icons` needs on Debian/Ubuntu (the themes measured in docs/icons.md)
APT_PACKAGES = (
    "adwaita-icon-theme breeze-icon-theme elementary-xfce-icon-theme faba-icon-theme faenza-icon-theme "
    "gnome-icon-theme mate-icon-theme moka-icon-theme numix-icon-theme oxygen-icon-theme papirus-icon-theme "
    "suru-icon-theme tango-icon-theme deepin-icon-theme lxde-icon-theme librsvg2-bin"
)
INSTALL_HINT = f"apt-get install {APT_PACKAGES}"
_EXTS = (".png", ".svg", ".svgz")
log = logging.getLogger(__name__)

Progress = Optional[Callable[[int, Optional[int], str], None]]


# -- themes ---------------------------------------------------------------------------------------

def theme_search_dirs() -> list[Path]:
    """The icon base directories of the XDG icon theme spec, in lookup order."""
    home = Path.home()
    data_home = os.environ.get("XDG_DATA_HOME") or str(home / ".local" / "share")
    data_dirs = os.environ.get("XDG_DATA_DIRS") or "/usr/local/share:/usr/share"
    out = [home / ".icons", Path(data_home) / "icons"]
    out += [Path(d) / "icons" for d in data_dirs.split(":") if d]
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class IconDir:
    """One directory of a theme's ``index.theme``: its pixel size at scale 1 and whether it scales."""

    path: str  # relative to the theme directory
    size: int
    scale: int
    scalable: bool
    min_size: int
    max_size: int

    def distance(self, target: int) -> int:
        """How far this directory's design size is from ``target`` px (0: drawn for that size).
        The scale is left out: a 24 px design at 2x is still the 24 px drawing."""
        if self.scalable:
            if self.min_size <= target <= self.max_size:
                return 0
            return min(abs(self.min_size - target), abs(self.max_size - target))
        return abs(self.size - target)


@dataclass(frozen=True)
class Theme:
    """An installed icon theme: its name, directory, ``index.theme`` directories and package."""

    name: str
    path: Path
    dirs: tuple[IconDir, ...]
    package: Optional[str] = None
    version: Optional[str] = None


def _int(v: Optional[str], default: int) -> int:
    try:
        return int(str(v).strip())
    except (TypeError, ValueError):
        return default


def read_theme(path: Path) -> Optional[Theme]:
    """The theme at ``path`` from its ``index.theme``, or None when it is no icon theme (a cursor theme)."""
    index = path / "index.theme"
    cp = configparser.RawConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # keys are case-sensitive in the spec
    try:
        cp.read_string(index.read_text(encoding="utf-8", errors="replace"))
    except (OSError, configparser.Error):
        return None
    if not cp.has_section("Icon Theme"):
        return None
    names = [d.strip() for d in cp.get("Icon Theme", "Directories", fallback="").split(",") if d.strip()]
    names += [d.strip() for d in cp.get("Icon Theme", "ScaledDirectories", fallback="").split(",") if d.strip()]
    dirs = []
    for d in dict.fromkeys(names):
        if not cp.has_section(d):
            continue
        sec = cp[d]
        context = sec.get("Context", "").strip().lower()
        if "symbolic" in d.lower() or context == "animations":
            continue
        size = _int(sec.get("Size"), 0)
        if size <= 0:
            continue
        kind = sec.get("Type", "Threshold").strip().lower()
        dirs.append(IconDir(d, size, max(1, _int(sec.get("Scale"), 1)), kind == "scalable",
                            _int(sec.get("MinSize"), size), _int(sec.get("MaxSize"), size)))
    if not dirs:
        return None
    return Theme(path.name, path, tuple(dirs))


def _dpkg_owners(paths: Sequence[Path]) -> dict[str, tuple[str, str]]:
    """path -> (package, version) from dpkg, for the paths it knows; {} where there is no dpkg."""
    if not paths or shutil.which("dpkg-query") is None:
        return {}
    try:
        res = subprocess.run(["dpkg-query", "-S", *[str(p) for p in paths]], capture_output=True, text=True,
                             timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return {}
    owner: dict[str, str] = {}
    for line in res.stdout.splitlines():
        pkgs, sep, path = line.partition(": ")
        if sep and not pkgs.startswith("diversion"):
            owner[path.strip()] = pkgs.split(",")[0].strip().split(":")[0]
    pkgs = sorted(set(owner.values()))
    versions: dict[str, str] = {}
    if pkgs:
        try:
            res = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\n", *pkgs], capture_output=True,
                                 text=True, timeout=60, check=False)
            for line in res.stdout.splitlines():
                name, _, ver = line.partition("\t")
                versions[name.strip()] = ver.strip()
        except (OSError, subprocess.SubprocessError) as e:  # the packages stay named, their versions unknown
            log.warning("dpkg-query could not read the theme package versions: %s", e)
    return {p: (pkg, versions.get(pkg, "")) for p, pkg in owner.items()}


def _real_files(theme: Theme) -> dict[str, list[tuple[IconDir, Path]]]:
    """icon name -> [(directory, file)] of the theme's real (non-symlink) icon files."""
    out: dict[str, list[tuple[IconDir, Path]]] = {}
    for d in theme.dirs:
        base = theme.path / d.path
        try:
            entries = list(os.scandir(base))
        except OSError:
            continue
        for e in entries:
            stem, ext = os.path.splitext(e.name)
            if ext.lower() not in _EXTS or stem.endswith("-symbolic") or e.is_symlink() or not e.is_file():
                continue
            out.setdefault(stem, []).append((d, Path(e.path)))
    return out


def pick_file(candidates: list[tuple[IconDir, Path]], target: int = IMAGE_SIZE) -> Path:
    """The drawing to use of one icon: the design size nearest ``target`` px; then drawn for exactly
    that size, larger before smaller (downscaling keeps detail), scale 1, then the path (deterministic)."""
    def key(c):
        d, p = c
        return (d.distance(target), not (not d.scalable and d.size == target), d.size < target, d.scale != 1, str(p))

    return min(candidates, key=key)[1]


def _base_theme(package: Optional[str], members: list[Theme]) -> Theme:
    """A family's base theme: the one named as its package ("papirus-icon-theme" -> Papirus), else
    the one with the most real icon names; light-background variants before "dark" ones."""
    if len(members) == 1:
        return members[0]
    if package:
        named = [t for t in members if package.lower().startswith(t.name.lower() + "-")]
        if named:
            return min(named, key=lambda t: (len(t.name), t.name))
    return max(members, key=lambda t: ("dark" not in t.name.lower(), len(_real_files(t)), -len(t.name), t.name))


def find_themes(search_dirs: Optional[Sequence[os.PathLike]] = None) -> list[Theme]:
    """The base theme of each installed theme family (see the module docstring), sorted by name."""
    dirs = [Path(d) for d in search_dirs] if search_dirs is not None else theme_search_dirs()
    seen: dict[str, Theme] = {}
    for base in dirs:
        try:
            children = sorted(p for p in base.iterdir() if p.is_dir())
        except OSError:
            continue
        for p in children:
            if p.name in seen or p.name in NOT_A_DESIGN:
                continue
            t = read_theme(p)
            if t is not None:
                seen[p.name] = t
    owners = _dpkg_owners([t.path / "index.theme" for t in seen.values()])
    families: dict[str, list[Theme]] = {}
    for t in seen.values():
        pkg, ver = owners.get(str(t.path / "index.theme"), (None, None))
        families.setdefault(pkg or f"theme:{t.name}", []).append(Theme(t.name, t.path, t.dirs, pkg, ver))
    bases = [_base_theme(members[0].package, members) for members in families.values()]
    return sorted((t for t in bases if _real_files(t)), key=lambda t: t.name)


# -- rendering ------------------------------------------------------------------------------------

def _fit(img, size: int):
    """An RGBA image scaled to fit ``size`` x ``size``, centred and composited onto BACKGROUND (RGB)."""
    from PIL import Image

    img = img.convert("RGBA")
    w, h = img.size
    if (w, h) != (size, size):
        s = size / max(w, h)
        img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)
    canvas = Image.new("RGBA", (size, size), BACKGROUND + (255,))
    canvas.alpha_composite(img, ((size - img.size[0]) // 2, (size - img.size[1]) // 2))
    return canvas.convert("RGB")


def render_icon(path: str, size: int = IMAGE_SIZE) -> np.ndarray:
    """One icon file as a ``size`` x ``size`` x 3 uint8 array on the fixed background (SVG via rsvg-convert)."""
    from PIL import Image

    if path.lower().endswith((".svg", ".svgz")):
        exe = shutil.which("rsvg-convert")
        if exe is None:
            raise DataError(f"rsvg-convert not found (it renders SVG icons): {INSTALL_HINT}")
        res = subprocess.run([exe, "-w", str(size), "-h", str(size), "-a", "-f", "png", path],
                             capture_output=True, timeout=60, check=False)
        if res.returncode != 0 or not res.stdout:
            raise DataError(f"rsvg-convert failed on {path}: {res.stderr.decode(errors='replace').strip()[:200]}")
        img = Image.open(io.BytesIO(res.stdout))
    else:
        img = Image.open(path)
        img.load()
    return np.asarray(_fit(img, size), dtype=np.uint8)


def _render_task(args: tuple[str, int]):
    path, size = args
    try:
        return render_icon(path, size), None
    except Exception as e:  # collected and reported per file by the caller
        return None, f"{path}: {one_line(e)}"


# -- the split ------------------------------------------------------------------------------------

def name_hash(name: str) -> int:
    """A stable 64-bit hash of an icon name (sha256): the split and the class order follow it."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")


def is_test_class(name: str, test_fraction: float = TEST_FRACTION) -> bool:
    """Whether an icon name belongs to the test classes (its hash in the top ``test_fraction``)."""
    return name_hash(name) >= int((1.0 - test_fraction) * 2 ** 64)


def near_duplicate_count(images: np.ndarray, threshold: float = NEAR_DUPLICATE) -> int:
    """How many of one class's images correlate above ``threshold`` (Pearson, on pixels) with another."""
    if len(images) < 2:
        return 0
    x = images.reshape(len(images), -1).astype(np.float64)
    x -= x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x /= np.where(norms > 0, norms, 1.0)
    c = x @ x.T
    np.fill_diagonal(c, -1.0)
    return int((c.max(axis=1) > threshold).sum())


# -- prepare --------------------------------------------------------------------------------------

def _save_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path, format="PNG", optimize=False)


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prepare_icons(root: os.PathLike, search_dirs: Optional[Sequence[os.PathLike]] = None, workers: int = 0,
                  progress: Progress = None, min_themes: int = MIN_THEMES) -> list[str]:
    """Builds ``ROOT/icons`` from the installed themes (see the module docstring); returns what was done.

    Nothing is written when fewer than ``min_themes`` theme families are installed (DataError naming
    the apt packages). The tree is built in a temporary folder and renamed into place."""
    themes = find_themes(search_dirs)
    if len(themes) < min_themes:
        have = ", ".join(t.name for t in themes) or "none"
        raise DataError(f"icons: {len(themes)} icon theme famil{'y' if len(themes) == 1 else 'ies'} installed "
                        f"({have}), {min_themes} needed: {INSTALL_HINT}")
    # one file per (name, theme)
    chosen: dict[str, dict[str, Path]] = {}
    for t in themes:
        for name, cands in _real_files(t).items():
            chosen.setdefault(name, {})[t.name] = pick_file(cands)
    n_names = len(chosen)
    chosen = {n: f for n, f in chosen.items() if len(f) >= min_themes}  # cannot reach min_themes otherwise
    tasks = [(n, th, str(p)) for n in sorted(chosen) for th, p in sorted(chosen[n].items())]
    if not tasks:
        raise DataError(f"icons: no icon name is drawn by {min_themes} or more of the installed themes "
                        f"({', '.join(t.name for t in themes)}): {INSTALL_HINT}")
    if any(p.lower().endswith((".svg", ".svgz")) for _, _, p in tasks) and shutil.which("rsvg-convert") is None:
        raise DataError(f"icons: rsvg-convert not found (librsvg renders the SVG icons): {INSTALL_HINT}")
    rendered: list = [None] * len(tasks)
    failures: list[str] = []
    total = len(tasks)
    workers = workers or max(1, os.cpu_count() or 1)
    args = [(p, IMAGE_SIZE) for _, _, p in tasks]
    if progress:
        progress(0, total, "render")
    if workers == 1 or total < 64:
        results = map(_render_task, args)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_render_task, args, chunksize=32)
    try:
        for k, (arr, err) in enumerate(results, 1):
            rendered[k - 1] = arr
            if err:
                failures.append(err)
            if progress and (k % 100 == 0 or k == total):
                progress(k, total, "render")
    finally:
        if pool is not None:
            pool.shutdown()
    # per class: drop exact duplicates (same pixels), keep classes with >= min_themes images
    by_class: dict[str, list[tuple[str, np.ndarray]]] = {}
    exact = 0
    seen_pixels: dict[str, set[bytes]] = {}
    for (name, theme, _), arr in zip(tasks, rendered):
        if arr is None:
            continue
        digest = hashlib.sha256(arr.tobytes()).digest()
        if digest in seen_pixels.setdefault(name, set()):
            exact += 1
            continue
        seen_pixels[name].add(digest)
        by_class.setdefault(name, []).append((theme, arr))
    kept = {n: v for n, v in by_class.items() if len(v) >= min_themes}
    if not kept:
        raise DataError(f"icons: no class keeps {min_themes} distinct drawings after duplicates are removed")
    near = sum(near_duplicate_count(np.stack([a for _, a in v])) for v in kept.values())
    n_images = sum(len(v) for v in kept.values())
    train = sorted((n for n in kept if not is_test_class(n)), key=name_hash)
    test = sorted((n for n in kept if is_test_class(n)), key=name_hash)
    if len(train) < 2 or len(test) < 2:
        raise DataError(f"icons: the split leaves {len(train)} train and {len(test)} test classes; "
                        f"install more themes: {INSTALL_HINT}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".icons-", dir=root))
    try:
        for name, items in kept.items():
            d = tmp / "images" / name
            d.mkdir(parents=True)
            for theme, arr in items:
                _save_png(arr, d / f"{theme}.png")
        for split, names in (("train", train), ("test", test)):
            (tmp / f"{split}.txt").write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
        used = sorted({th for items in kept.values() for th, _ in items})
        manifest = {
            "version": MANIFEST_VERSION,
            "image_size": IMAGE_SIZE, "background": list(BACKGROUND), "min_themes": min_themes,
            "themes": [{"theme": t.name, "package": t.package, "version": t.version, "path": str(t.path),
                        "images": sum(1 for items in kept.values() for th, _ in items if th == t.name)}
                       for t in themes if t.name in used],
            "classes": len(kept), "images": n_images,
            "splits": {"train": {"classes": len(train), "images": sum(len(kept[n]) for n in train),
                                 "sha256": sha256_file(tmp / "train.txt")},
                       "test": {"classes": len(test), "images": sum(len(kept[n]) for n in test),
                                "sha256": sha256_file(tmp / "test.txt")}},
            "exact_duplicates_removed": exact,
            "near_duplicates": near, "near_duplicate_share": round(near / n_images, 4),
            "near_duplicate_rule": f"Pearson correlation of {IMAGE_SIZE}px pixels > {NEAR_DUPLICATE} within a class",
            "names_below_min_themes": n_names - len(kept),
            "render_failures": len(failures), "render_failure_examples": failures[:5],
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")  # the whole tree is renamed below
        dest = root / SUBDIR
        old = None
        if dest.exists():
            old = root / f".icons-old-{os.getpid()}"
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    sp = manifest["splits"]
    done = [f"icons: {len(used)} themes ({', '.join(used)})",
            f"icons: {len(kept)} classes, {n_images} images at {IMAGE_SIZE}px: train {sp['train']['classes']} classes / "
            f"{sp['train']['images']} images, test {sp['test']['classes']} / {sp['test']['images']}",
            f"icons: {exact} exact duplicates removed within classes; {near} images "
            f"({100 * manifest['near_duplicate_share']:.1f}%) have a near-duplicate (kept); "
            f"{manifest['names_below_min_themes']} icon names have fewer than {min_themes} distinct drawings (not used)"]
    if failures:
        done.append(f"icons: {len(failures)} files could not be rendered and were skipped (first: {failures[0]})")
    done.append(f"icons: wrote {dest}")
    return done


# -- reading --------------------------------------------------------------------------------------

def icons_dir(root: Optional[os.PathLike]) -> Path:
    """``ROOT/icons`` (or ``root`` itself when it is that folder); DataError saying how to make it."""
    from ctxsim.data.datasets import default_root

    r = Path(root if root is not None else default_root()).expanduser()
    for d in (r / SUBDIR, r):
        if (d / MANIFEST).is_file() and (d / "train.txt").is_file():
            return d
    raise DataError(f"icons: no prepared data under {r / SUBDIR} (run: ctxsim data prepare icons --root {r})")


def read_manifest(ddir: Path) -> dict:
    try:
        m = json.loads((ddir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"icons: cannot read {ddir / MANIFEST}: {one_line(e)}") from None
    if not isinstance(m, dict) or m.get("version") != MANIFEST_VERSION:
        raise DataError(f"icons: {ddir / MANIFEST} is not a version-{MANIFEST_VERSION} manifest; "
                        "run ctxsim data prepare icons again")
    return m


def read_classes(ddir: Path, split: str) -> list[str]:
    """The class folders of ``split`` ("train" or "test") in class-id order."""
    p = ddir / f"{split}.txt"
    try:
        names = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except OSError as e:
        raise DataError(f"icons: cannot read {p}: {one_line(e)}") from None
    if not names:
        raise DataError(f"icons: {p} lists no classes")
    return names


def class_images(ddir: Path, name: str) -> list[Path]:
    """The images of one class folder, sorted by theme."""
    d = ddir / "images" / name
    try:
        return sorted(p for p in d.iterdir() if p.suffix == ".png")
    except OSError:
        raise DataError(f"icons: class folder {d} is missing (check with: ctxsim data verify icons)") from None


def source_of(manifest: dict) -> dict:
    """What makes two icons results comparable: the theme packages and versions and the split hashes,
    with one digest of them all."""
    themes = {t["theme"]: f"{t.get('package') or '?'} {t.get('version') or '?'}" for t in manifest.get("themes", [])}
    split = {s: v.get("sha256") for s, v in (manifest.get("splits") or {}).items()}
    digest = _sha256_text(json.dumps({"themes": themes, "split": split, "size": manifest.get("image_size")},
                                     sort_keys=True))
    return {"themes": themes, "split_sha256": split, "digest": digest[:16]}


def _load_split(ddir: Path, names: list[str], first_label: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    xs, ys = [], []
    for k, name in enumerate(names):
        for p in class_images(ddir, name):
            try:
                with Image.open(p) as im:
                    im = im.convert("RGB")
                    if im.size != (size, size):
                        im = im.resize((size, size), Image.BILINEAR)
                    xs.append(np.asarray(im, dtype=np.uint8))
            except OSError as e:
                raise DataError(f"icons: cannot read image {p}: {one_line(e)}") from None
            ys.append(first_label + k)
    return np.stack(xs).transpose(0, 3, 1, 2), np.asarray(ys, dtype=np.int64)


def load_icons(root: Optional[os.PathLike] = None, image_size: int = 32):
    """(train images, train labels, test images, test labels, manifest, dataset dir): uint8 [N, 3, S, S]
    arrays; train labels 0..C-1 in train.txt order, test labels continue after them."""
    ddir = icons_dir(root)
    manifest = read_manifest(ddir)
    train, test = read_classes(ddir, "train"), read_classes(ddir, "test")
    x_tr, y_tr = _load_split(ddir, train, 0, int(image_size))
    x_te, y_te = _load_split(ddir, test, len(train), int(image_size))
    return x_tr, y_tr, x_te, y_te, manifest, ddir


# -- verify ---------------------------------------------------------------------------------------

def verify_icons(root: os.PathLike, decode: bool = True, progress: Progress = None):
    """A VerifyReport of ``ROOT/icons``: manifest, split files (sha256 and counts as the manifest
    records), class-disjoint splits, at least ``min_themes`` images per class, every image decodes
    at the recorded size, and no two pixel-identical images within a class."""
    from ctxsim.data.prepare import VerifyReport

    rep = VerifyReport("icons", str(root))
    try:
        ddir = icons_dir(root)
        manifest = read_manifest(ddir)
    except DataError as e:
        rep.add("layout", str(e))
        return rep
    min_themes = int(manifest.get("min_themes", MIN_THEMES))
    size = int(manifest.get("image_size", IMAGE_SIZE))
    splits: dict[str, list[str]] = {}
    for split in ("train", "test"):
        try:
            names = read_classes(ddir, split)
        except DataError as e:
            rep.add("split", str(e))
            continue
        splits[split] = names
        want = (manifest.get("splits") or {}).get(split, {})
        got = sha256_file(ddir / f"{split}.txt")
        if want.get("sha256") and want["sha256"] != got:
            rep.add("checksum", f"{split}.txt differs from the manifest (sha256 {got[:8]}, expected {want['sha256'][:8]})")
    if "train" in splits and "test" in splits:
        both = set(splits["train"]) & set(splits["test"])
        if both:
            rep.add("split", f"{len(both)} classes are in both train.txt and test.txt (first: {sorted(both)[0]})")
    from PIL import Image

    todo = [(s, n) for s in splits for n in splits[s]]
    checked = 0
    for k, (split, name) in enumerate(todo, 1):
        files = (ddir / "images" / name)
        paths = sorted(files.glob("*.png")) if files.is_dir() else []
        if not paths:
            rep.add("missing", str(files))
            continue
        rep.counts.setdefault(split, {"images": 0, "classes": 0})
        rep.counts[split]["images"] += len(paths)
        rep.counts[split]["classes"] += 1
        if len(paths) < min_themes:
            rep.add("count", f"class {name} has {len(paths)} images, fewer than {min_themes}")
        digests: dict[bytes, Path] = {}
        for p in paths:
            checked += 1
            if not decode:
                continue
            try:
                with Image.open(p) as im:
                    arr = np.asarray(im.convert("RGB"))
            except OSError as e:
                rep.add("unreadable", f"{p} ({one_line(e)})")
                continue
            if arr.shape[:2] != (size, size):
                rep.add("unreadable", f"{p} (size {arr.shape[1]}x{arr.shape[0]}, expected {size}x{size})")
            d = hashlib.sha256(arr.tobytes()).digest()
            if d in digests:
                rep.add("duplicate", f"{p} is pixel-identical to {digests[d].name} (class {name})")
            digests.setdefault(d, p)
        if progress and (k % 50 == 0 or k == len(todo)):
            progress(k, len(todo), "decode" if decode else "check")
    rep.checked_images = checked
    for split, c in rep.counts.items():
        want = (manifest.get("splits") or {}).get(split, {})
        if want and (want.get("images"), want.get("classes")) != (c["images"], c["classes"]):
            rep.add("count", f"{split}: {c['images']} images / {c['classes']} classes, the manifest records "
                             f"{want.get('images')} / {want.get('classes')}")
    return rep
