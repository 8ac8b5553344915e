"""Download, extract, place split files, resize iNat and verify the benchmarks (reference-implementation §4.3).

Library code: no printing. Long steps take a ``progress(done, total, label)`` callback; the CLI
(``ctxsim data ...``) draws the progress bars. ``root`` is the parent data directory.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from ctxsim.data.common import check_image, sha256_file, shipped_split
from ctxsim.data.datasets import LAYOUTS, read_split
from ctxsim.errors import DataError, one_line

log = logging.getLogger(__name__)

Progress = Optional[Callable[[int, Optional[int], str], None]]
INAT_SPLIT_BASE = "https://raw.githubusercontent.com/Chris210634/metric-learning-using-contextual-similarity/main/data/"


@dataclass(frozen=True)
class Source:
    """One archive of a dataset: where it comes from and what extracting it yields."""

    filename: str
    url: Optional[str]  # None: must be fetched by hand
    manual_hint: str = ""


SOURCES: Dict[str, List[Source]] = {
    "cub": [Source("CUB_200_2011.tgz", "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz")],
    "cars": [Source("car_ims.tgz", "http://ai.stanford.edu/~jkrause/car196/car_ims.tgz",
                    "the Stanford URL is often dead: fetch car_ims.tgz from a mirror and pass --archive FILE")],
    "sop": [Source("Stanford_Online_Products.zip", "ftp://cs.stanford.edu/cs/cvgl/Stanford_Online_Products.zip",
                   "the Stanford FTP is often dead: fetch Stanford_Online_Products.zip from a mirror and pass --archive FILE")],
    "inat": [Source("train_mini.tar.gz", "https://ml-inat-competition-datasets.s3.amazonaws.com/2021/train_mini.tar.gz")],
    "inshop": [Source("img.zip", None,
                      "download In-Shop's low-res img.zip by hand from the DeepFashion Google Drive "
                      "(In-shop Clothes Retrieval Benchmark/Img/img.zip) and pass --archive img.zip "
                      "(or put it at <root>/img.zip)")],
}
SMALL_HINTS = {
    "fashion-mnist": "apt-get install dataset-fashion-mnist (files in /usr/share/datasets/fashion-mnist), or put "
                     "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
                     "t10k-labels-idx1-ubyte.gz in --root",
    "digits": "bundled with scikit-learn: nothing to download",
    "synthetic": "generated on the fly: nothing to download",
}


def _check_name(name: str) -> None:
    if name not in LAYOUTS:
        raise DataError(f"unknown dataset {name!r}; prepare/verify support {', '.join(LAYOUTS)}")


# -- download -------------------------------------------------------------------------------------

def download(url: str, dest: os.PathLike, progress: Progress = None, chunk: int = 1 << 20, timeout: float = 60) -> Path:
    """Downloads ``url`` to ``dest`` through ``dest.part``, resuming with an HTTP Range request."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "ctxsim"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # range past the end: the part file is complete
            os.replace(part, dest)
            return dest
        raise DataError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DataError(f"download of {url} failed: {getattr(e, 'reason', e)}") from None
    with resp:
        status = getattr(resp, "status", None) or resp.getcode()
        length = resp.headers.get("Content-Length")
        if have and status == 206:
            total = have + int(length) if length is not None else None
            mode = "ab"
        else:  # the server ignored the range (200) or nothing to resume
            have, mode = 0, "wb"
            total = int(length) if length is not None else None
        done = have
        if progress:
            progress(done, total, dest.name)
        with open(part, mode) as f:
            while True:
                try:
                    buf = resp.read(chunk)
                except OSError as e:
                    raise DataError(f"download of {url} interrupted at {done} bytes ({e}); run again to resume") from None
                if not buf:
                    break
                f.write(buf)
                done += len(buf)
                if progress:
                    progress(done, total, dest.name)
    if total is not None and done != total:
        raise DataError(f"download of {url} stopped at {done} of {total} bytes; run again to resume")
    os.replace(part, dest)
    return dest


def _archives(name: str, root: Path, archive, download_missing: bool, progress: Progress) -> List[Path]:
    if archive is not None:
        a = Path(archive)
        if not a.is_file():
            raise DataError(f"archive {a} does not exist")
        return [a]
    out = []
    for src in SOURCES[name]:
        dest = root / src.filename
        if dest.is_file():
            out.append(dest)
        elif src.url is None:
            raise DataError(f"{name}: {src.manual_hint}")
        elif not download_missing:
            raise DataError(f"{name}: archive {dest} not found; pass --archive FILE or allow downloading")
        else:
            try:
                out.append(download(src.url, dest, progress))
            except DataError as e:
                raise DataError(f"{e}" + (f"; {src.manual_hint}" if src.manual_hint else "")) from None
    return out


def _inat_lists(root: Path, download_missing: bool, progress: Progress) -> List[Path]:
    out = []
    for f in ("iNaturalist_train.txt", "iNaturalist_test.txt"):
        here = [root / f, root / "train_mini_resized" / f]
        found = next((p for p in here if p.is_file()), None)
        if found is None:
            if not download_missing:
                raise DataError(f"inat: split file {f} not found in {root}; it comes from {INAT_SPLIT_BASE}{f}")
            found = download(INAT_SPLIT_BASE + f, root / f, progress)
        out.append(found)
    return out


def download_dataset(name: str, root: os.PathLike, progress: Progress = None, archive: Optional[os.PathLike] = None) -> List[Path]:
    """Fetches the archives (and iNat's split files) of a benchmark into ``root``, resuming partial files."""
    _check_name(name)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out = _archives(name, root, archive, True, progress)
    if name == "inat":
        out += _inat_lists(root, True, progress)
    return out


# -- extract --------------------------------------------------------------------------------------

def _inside(base: Path, target: Path) -> bool:
    base = base.resolve()
    try:
        target.resolve().relative_to(base)
        return True
    except ValueError:
        return False


def extract(archive: os.PathLike, dest: os.PathLike, progress: Progress = None) -> List[str]:
    """Extracts a tar(.gz/.bz2/.xz) or zip archive into ``dest``, refusing any member outside it.

    Absolute paths, ``..`` components, links pointing outside and device files raise DataError
    before anything is written. Returns the top-level names extracted.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tops = set()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            infos = z.infolist()
            for i in infos:
                n = i.filename
                if n.startswith(("/", "\\")) or ".." in Path(n).parts or not _inside(dest, dest / n):
                    raise DataError(f"unsafe path {n!r} in {archive}: refusing to extract")
            for k, i in enumerate(infos):
                z.extract(i, dest)
                tops.add(Path(i.filename).parts[0])
                if progress and (k % 200 == 0 or k == len(infos) - 1):
                    progress(k + 1, len(infos), archive.name)
        return sorted(tops)
    try:
        tf = tarfile.open(archive)
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"{archive} is neither a zip nor a tar archive ({e})") from None
    with tf:
        members = tf.getmembers()
        for m in members:
            n = m.name
            if n.startswith(("/", "\\")) or ".." in Path(n).parts or not _inside(dest, dest / n):
                raise DataError(f"unsafe path {n!r} in {archive}: refusing to extract")
            if m.issym() or m.islnk():
                link = Path(m.linkname)
                tgt = (dest / n).parent / link if m.issym() else dest / link
                if link.is_absolute() or not _inside(dest, tgt):
                    raise DataError(f"unsafe link {n!r} -> {m.linkname!r} in {archive}: refusing to extract")
            if m.isdev():
                raise DataError(f"device file {n!r} in {archive}: refusing to extract")
        for k, m in enumerate(members):
            try:
                tf.extract(m, dest, filter="data")
            except TypeError:  # Python without extraction filters (checked above anyway)
                tf.extract(m, dest)
            tops.add(Path(m.name).parts[0])
            if progress and (k % 200 == 0 or k == len(members) - 1):
                progress(k + 1, len(members), archive.name)
    return sorted(tops)


# -- split files ----------------------------------------------------------------------------------

def place_splits(name: str, root: os.PathLike) -> List[Path]:
    """Copies the shipped split files (CUB, Cars, In-Shop) into the dataset directory if absent."""
    _check_name(name)
    lay = LAYOUTS[name]
    ddir = Path(root) / lay.subdir
    placed = []
    if not lay.shipped:
        return placed
    ddir.mkdir(parents=True, exist_ok=True)
    for fname in lay.splits.values():
        dst = ddir / fname
        if dst.is_file():
            continue
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.copyfile(shipped_split(fname), tmp)
        os.replace(tmp, dst)
        placed.append(dst)
    return placed


# -- iNat resize ----------------------------------------------------------------------------------

def _resize_one(args: Tuple[str, str, int]) -> Optional[str]:
    """Resize(short side) with bilinear filtering, as torchvision's Resize(288) on a PIL image."""
    from PIL import Image

    from ctxsim.data.transforms import _resized_short_side, draft_factor

    src, dst, size = args
    try:
        img = Image.open(src)
        w, h = img.size
        tw, th = _resized_short_side(w, h, size)
        k = draft_factor((w, h), (tw, th))
        if k > 1 and img.format == "JPEG":
            img.draft("RGB", (w // k, h // k))
        img = img.convert("RGB").resize((tw, th), Image.BILINEAR)
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        tmp = dst + ".tmp.jpg"
        img.save(tmp)  # PIL's JPEG defaults, as the reference's img.save(new_path)
        os.replace(tmp, dst)
        return None
    except Exception as e:  # report the file; the caller collects failures
        return f"{src}: {one_line(e)}"


def resize_inat(root: os.PathLike, size: int = 288, workers: int = 0, progress: Progress = None,
                src_dir: str = "train_mini", dst_dir: str = "train_mini_resized") -> Tuple[int, List[str]]:
    """Resizes every image of both iNat lists to short side ``size`` under ``train_mini_resized``.

    Skips images already resized. Returns (number resized, failures as 'path: reason').
    """
    root = Path(root)
    lists = []
    for f in ("iNaturalist_train.txt", "iNaturalist_test.txt"):
        p = root / dst_dir / f if (root / dst_dir / f).is_file() else root / f
        if not p.is_file():
            raise DataError(f"inat: split file {f} not found in {root} or {root / dst_dir}")
        lists.append(p)
    from ctxsim.data.common import read_comma_split

    rel = []
    for p in lists:
        rel += read_comma_split(p)[0]
    jobs = [(str(root / src_dir / r), str(root / dst_dir / r), size) for r in rel if not (root / dst_dir / r).is_file()]
    missing_src = [j[0] for j in jobs if not Path(j[0]).is_file()]
    if missing_src and len(missing_src) == len(jobs):
        raise DataError(f"inat: {len(missing_src)} source images missing under {root / src_dir} "
                        f"(first: {missing_src[0]}); extract train_mini.tar.gz first")
    failures: List[str] = []
    total = len(jobs)
    if progress:
        progress(0, total, "resize")
    workers = workers or max(1, (os.cpu_count() or 2) - 1)
    if workers == 1 or total < 8:
        for k, j in enumerate(jobs, 1):
            r = _resize_one(j)
            if r:
                failures.append(r)
            if progress:
                progress(k, total, "resize")
    else:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            for k, r in enumerate(ex.map(_resize_one, jobs, chunksize=64), 1):
                if r:
                    failures.append(r)
                if progress and (k % 50 == 0 or k == total):
                    progress(k, total, "resize")
    for p in lists:  # the reference moves the lists into train_mini_resized/
        dst = root / dst_dir / p.name
        if p != dst:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, dst)
    return total - len(failures), failures


# -- prepare --------------------------------------------------------------------------------------

def prepare(name: str, root: os.PathLike, archive: Optional[os.PathLike] = None, download_missing: bool = True,
            workers: int = 0, progress: Progress = None) -> List[str]:
    """Runs the download_data.sh steps for one benchmark (reference-implementation §4.3); returns what was done."""
    _check_name(name)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lay = LAYOUTS[name]
    done: List[str] = []
    if name == "inat":
        _inat_lists(root, download_missing, progress)
        if not (root / "train_mini").is_dir():
            for a in _archives(name, root, archive, download_missing, progress):
                tops = extract(a, root, progress)
                done.append(f"extracted {a.name} ({', '.join(tops[:3])})")
        n, failures = resize_inat(root, workers=workers, progress=progress)
        done.append(f"resized {n} iNat images to short side 288 into train_mini_resized/")
        if failures:
            raise DataError(f"inat: {len(failures)} images could not be resized (first: {failures[0]})")
        return done
    ddir = root / lay.subdir
    if not (ddir / lay.marker).is_dir():
        for a in _archives(name, root, archive, download_missing, progress):
            tops = extract(a, root, progress)
            done.append(f"extracted {a.name} ({', '.join(tops[:3])})")
        # download_data.sh: mkdir car196 && mv car_ims car196; mkdir inshop && mv img inshop
        moved = {"cars": "car_ims", "inshop": "img"}.get(name)
        if moved and (root / moved).is_dir():
            ddir.mkdir(exist_ok=True)
            if (ddir / moved).exists():
                raise DataError(f"{name}: both {root / moved} and {ddir / moved} exist; remove one")
            os.replace(root / moved, ddir / moved)
            done.append(f"moved {moved}/ into {lay.subdir}/")
        if not (ddir / lay.marker).is_dir():
            raise DataError(f"{name}: the archive did not produce {ddir / lay.marker}")
    for p in place_splits(name, root):
        done.append(f"placed {p.relative_to(root)}")
    return done


# -- verify ---------------------------------------------------------------------------------------

@dataclass
class VerifyReport:
    """Problems found by :func:`verify`, grouped by class (missing, unreadable, checksum, count, layout)."""

    name: str
    root: str
    counts: Dict[str, Dict[str, int]] = field(default_factory=dict)
    problems: Dict[str, List[str]] = field(default_factory=dict)
    checked_images: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: str, message: str) -> None:
        self.problems.setdefault(kind, []).append(message)

    def lines(self, max_names: int = 5) -> List[str]:
        """One line per problem class (naming the first files), then a summary line."""
        out = []
        for kind, items in self.problems.items():
            if kind in ("missing", "unreadable"):
                shown = "; ".join(items[:max_names])
                more = f" (and {len(items) - max_names} more)" if len(items) > max_names else ""
                noun = "image" if len(items) == 1 else "images"
                out.append(f"{self.name}: {len(items)} {kind} {noun}: {shown}{more}")
            else:
                out.extend(f"{self.name}: {m}" for m in items)
        n = sum(len(v) for v in self.problems.values())
        out.append(f"{self.name}: {'OK' if self.ok else f'{n} problem(s)'}; checked {self.checked_images} images "
                   + ", ".join(f"{s} {c['images']} images/{c['classes']} classes" for s, c in self.counts.items()))
        return out

    def to_json(self) -> dict:
        return {"dataset": self.name, "root": self.root, "ok": self.ok, "counts": self.counts,
                "checked_images": self.checked_images, "problems": self.problems}


_check_image = check_image  # the decode check verify maps over the images (also used by the preflight)


def verify(name: str, root: os.PathLike, reference: bool = True, decode: bool = True, workers: int = 0,
           progress: Progress = None) -> VerifyReport:
    """Checks a benchmark tree: split files (sha256 vs the shipped copies, reference counts when
    ``reference``), every listed image present, and (``decode``) readable."""
    _check_name(name)
    lay = LAYOUTS[name]
    rep = VerifyReport(name, str(root))
    r = Path(root)
    if not r.is_dir():
        rep.add("layout", f"data root {r} does not exist")
        return rep
    from ctxsim.data.datasets import dataset_dir, split_file

    try:
        ddir = dataset_dir(name, r)
    except DataError as e:
        rep.add("layout", str(e))
        return rep
    listed: List[str] = []
    for split, fname in lay.splits.items():
        try:
            sp = split_file(name, ddir, split)
        except DataError as e:
            rep.add("split", str(e))
            continue
        if lay.shipped and reference:
            ref = shipped_split(fname)
            got, want = sha256_file(sp), sha256_file(ref)
            if got != want:
                rep.add("checksum", f"split file {sp} differs from the reference copy (sha256 {got[:8]}, expected {want[:8]})")
        try:
            paths, cls, _ = read_split(name, ddir, split)
        except DataError as e:
            rep.add("split", str(e))
            continue
        rep.counts[split] = {"images": len(paths), "classes": int(len(set(cls.tolist())))}
        if reference and lay.expected_images:
            exp_i = lay.expected_images.get(split)
            exp_c = lay.expected_classes.get(split)
            if exp_i is not None and len(paths) != exp_i:
                rep.add("count", f"{split} split lists {len(paths)} images, the reference has {exp_i}")
            if exp_c is not None and rep.counts[split]["classes"] != exp_c:
                rep.add("count", f"{split} split has {rep.counts[split]['classes']} classes, the reference has {exp_c}")
        listed += paths
    uniq = list(dict.fromkeys(listed))
    full = [str(ddir / p) for p in uniq]
    missing = [p for p, f in zip(uniq, full) if not os.path.isfile(f)]
    for p in missing:
        rep.add("missing", str(ddir / p))
    present = [f for f in full if os.path.isfile(f)]
    rep.checked_images = len(present)
    if decode and present:
        total = len(present)
        workers = workers or max(1, min(8, (os.cpu_count() or 2) - 1))
        if workers == 1 or total < 256:
            results = []
            for k, f in enumerate(present, 1):
                results.append(_check_image(f))
                if progress and (k % 100 == 0 or k == total):
                    progress(k, total, "decode")
        else:
            results = []
            with ProcessPoolExecutor(max_workers=workers) as ex:
                for k, res in enumerate(ex.map(_check_image, present, chunksize=128), 1):
                    results.append(res)
                    if progress and (k % 500 == 0 or k == total):
                        progress(k, total, "decode")
        for f, res in zip(present, results):
            if res:
                rep.add("unreadable", f"{f} ({res})")
    return rep
