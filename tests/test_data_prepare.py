"""Offline prepare/verify/download: local archives, safe extraction, iNat resize, HTTP Range resume, CLI."""

from __future__ import annotations

import http.server
import io
import re
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from ctxsim.cli.main import app
from ctxsim.data import build_data
from ctxsim.data.common import sha256_file, shipped_split
from ctxsim.data.fake import corrupt_file, make_fake_benchmark
from ctxsim.data.prepare import download, extract, prepare, verify
from ctxsim.errors import DataError

runner = CliRunner()


def _tar(archive: Path, src_root: Path, top: str) -> Path:
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src_root / top, arcname=top)
    return archive


def _zip(archive: Path, src_root: Path, top: str) -> Path:
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted((src_root / top).rglob("*")):
            z.write(p, p.relative_to(src_root).as_posix())
    return archive


def test_extract_refuses_path_traversal(tmp_path):
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tf:
        data = b"x"
        ti = tarfile.TarInfo("../outside.txt")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    with pytest.raises(DataError, match="unsafe path"):
        extract(evil, tmp_path / "out")
    assert not (tmp_path / "outside.txt").exists()
    link = tmp_path / "link.tar"
    with tarfile.open(link, "w") as tf:
        ti = tarfile.TarInfo("a/ln")
        ti.type = tarfile.SYMTYPE
        ti.linkname = "../../etc/passwd"
        tf.addfile(ti)
    with pytest.raises(DataError, match="unsafe link"):
        extract(link, tmp_path / "out")
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("../../zip_outside.txt", "x")
    with pytest.raises(DataError, match="unsafe path"):
        extract(z, tmp_path / "out")
    assert not (tmp_path / "zip_outside.txt").exists()
    bad = tmp_path / "notanarchive.tgz"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError, match="neither a zip nor a tar"):
        extract(bad, tmp_path / "out")


def test_prepare_cub_from_local_archive_then_verify(tmp_path):
    src = tmp_path / "src"
    make_fake_benchmark("cub", src, train_classes=3, test_classes=2, per_class=3)
    archive = _tar(tmp_path / "CUB_200_2011.tgz", src, "CUB_200_2011")
    data = tmp_path / "data"
    steps = prepare("cub", data, archive=archive, download_missing=False)
    assert any("extracted CUB_200_2011.tgz" in s for s in steps)
    b = build_data("cub", root=data)
    assert (len(b.train), len(b.query), b.num_classes) == (9, 6, 3)
    assert verify("cub", data, reference=False).ok
    # against the reference: the tiny tree's split files differ from the shipped ones
    rep = verify("cub", data, reference=True, decode=False)
    assert set(rep.problems) == {"checksum", "count"}
    assert any("cub200_train.txt differs from the reference copy" in m for m in rep.problems["checksum"])
    # running again is a no-op
    assert prepare("cub", data, download_missing=False) == []


def test_prepare_cars_moves_car_ims_and_places_shipped_splits(tmp_path):
    src = tmp_path / "src"
    (src / "car_ims").mkdir(parents=True)
    Image.new("RGB", (30, 20), (10, 20, 30)).save(src / "car_ims" / "000001.jpg")
    archive = _tar(tmp_path / "car_ims.tgz", src, "car_ims")
    data = tmp_path / "data"
    steps = prepare("cars", data, archive=archive, download_missing=False)
    assert (data / "car196" / "car_ims" / "000001.jpg").is_file() and not (data / "car_ims").exists()
    assert "moved car_ims/ into car196/" in steps
    for f in ("cars196_train.txt", "cars196_test.txt"):
        assert sha256_file(data / "car196" / f) == sha256_file(shipped_split(f))
    rep = verify("cars", data, decode=False)  # the real split lists 16,185 images; we have one
    assert set(rep.problems) == {"missing"} and len(rep.problems["missing"]) == 16184


def test_prepare_inshop_needs_manual_img_zip(tmp_path):
    with pytest.raises(DataError, match="Google Drive"):
        prepare("inshop", tmp_path / "data")
    src = tmp_path / "src"
    make_fake_benchmark("inshop", src, train_classes=2, test_classes=2, per_class=2, write_splits=False)
    archive = _zip(tmp_path / "img.zip", src / "inshop", "img")
    data = tmp_path / "data"
    prepare("inshop", data, archive=archive, download_missing=False)
    assert (data / "inshop" / "img" / "WOMEN").is_dir()
    assert sha256_file(data / "inshop" / "inshop_query.txt") == sha256_file(shipped_split("inshop_query.txt"))


def test_prepare_inat_resizes_with_workers(tmp_path):
    info = make_fake_benchmark("inat", tmp_path, train_classes=3, test_classes=2, per_class=2, inat_source=True)
    steps = prepare("inat", tmp_path, download_missing=False, workers=2)
    assert "resized 10 iNat images" in steps[-1]
    out = sorted((tmp_path / "train_mini_resized").rglob("*.jpg"))
    assert len(out) == 10
    with Image.open(out[0]) as im:
        assert min(im.size) == 288 and im.size == (384, 288)  # 64x48 source, torchvision Resize(288) sizes
    b = build_data("inat", root=tmp_path)
    assert (len(b.train), len(b.query)) == (info["images"]["train"], info["images"]["test"])
    steps = prepare("inat", tmp_path, download_missing=False)
    assert "resized 0 iNat images" in steps[-1]  # already done: skipped


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    payload = bytes(range(256)) * 40
    honour_range = True
    seen_ranges: list = []

    def do_GET(self):
        rng = self.headers.get("Range")
        type(self).seen_ranges.append(rng)
        body, status = self.payload, 200
        if rng and self.honour_range:
            start = int(re.match(r"bytes=(\d+)-", rng).group(1))
            body, status = self.payload[start:], 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.mark.parametrize("honour", [True, False])
def test_download_resumes_with_range(tmp_path, honour):
    _RangeHandler.honour_range = honour
    _RangeHandler.seen_ranges = []
    srv = http.server.HTTPServer(("127.0.0.1", 0), _RangeHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        dest = tmp_path / "f.bin"
        (tmp_path / "f.bin.part").write_bytes(_RangeHandler.payload[:1000])
        seen = []
        download(f"http://127.0.0.1:{srv.server_port}/f.bin", dest, progress=lambda d, tot, n: seen.append((d, tot)))
        assert dest.read_bytes() == _RangeHandler.payload and not (tmp_path / "f.bin.part").exists()
        assert _RangeHandler.seen_ranges == ["bytes=1000-"]
        assert seen[-1] == (len(_RangeHandler.payload), len(_RangeHandler.payload))
        assert seen[0][0] == (1000 if honour else 0)
    finally:
        srv.shutdown()
        srv.server_close()


def test_download_error_is_one_line(tmp_path):
    with pytest.raises(DataError, match="download of http://127.0.0.1:9/x failed"):
        download("http://127.0.0.1:9/x", tmp_path / "x", timeout=2)


# -- CLI ------------------------------------------------------------------------------------------

def _err(result) -> str:
    return result.stderr if hasattr(result, "stderr") else result.output


def test_cli_verify_missing_root(tmp_path):
    r = runner.invoke(app, ["data", "verify", "cub", "--root", str(tmp_path / "absent")])
    assert r.exit_code != 0
    assert "error: cub: data root" in _err(r) and "does not exist" in _err(r)
    assert "Traceback" not in r.output


def test_cli_verify_missing_file_and_corrupt_jpeg(tmp_path):
    info = make_fake_benchmark("cars", tmp_path, train_classes=2, test_classes=2, per_class=3)
    r = runner.invoke(app, ["data", "verify", "cars", "--root", str(tmp_path), "--custom-splits"])
    assert r.exit_code == 0, _err(r)
    assert "cars: OK" in _err(r)
    missing = Path(info["files"][0])
    missing.unlink()
    r = runner.invoke(app, ["data", "verify", "cars", "--root", str(tmp_path), "--custom-splits"])
    assert r.exit_code == 1
    lines = [ln for ln in _err(r).splitlines() if ln.startswith("error:")]
    assert lines == [f"error: cars: 1 missing image: {missing}"]
    missing.write_bytes(Path(info["files"][1]).read_bytes())
    corrupt_file(info["files"][4], "truncate")
    corrupt_file(info["files"][5], "garbage")
    r = runner.invoke(app, ["data", "verify", "cars", "--root", str(tmp_path), "--custom-splits"])
    assert r.exit_code == 1
    lines = [ln for ln in _err(r).splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith("error: cars: 2 unreadable images: ")
    assert "000005.jpg" in lines[0] and "000006.jpg" in lines[0]
    assert "2 problem(s)" in _err(r)
    r = runner.invoke(app, ["data", "verify", "cars", "--root", str(tmp_path), "--custom-splits", "--json"])
    import json

    rep = json.loads(r.stdout)
    assert r.exit_code == 1 and not rep["ok"] and len(rep["problems"]["unreadable"]) == 2


def test_cli_prepare_with_archive_and_small_datasets(tmp_path):
    src = tmp_path / "src"
    make_fake_benchmark("sop", src, train_classes=2, test_classes=2, per_class=2)
    archive = _zip(tmp_path / "sop.zip", src, "Stanford_Online_Products")
    r = runner.invoke(app, ["data", "prepare", "sop", "--root", str(tmp_path / "d"), "--archive", str(archive),
                            "--no-download"])
    assert r.exit_code == 0, _err(r)
    assert (tmp_path / "d" / "Stanford_Online_Products" / "Ebay_train.txt").is_file()
    r = runner.invoke(app, ["data", "prepare", "inshop", "--root", str(tmp_path / "d"), "--no-download"])
    assert r.exit_code == 2 and "img.zip" in _err(r) and "Traceback" not in r.output
    r = runner.invoke(app, ["data", "download", "digits"])
    assert r.exit_code == 0 and "nothing to download" in _err(r)
    r = runner.invoke(app, ["data", "verify", "digits"])
    assert r.exit_code == 0
    r = runner.invoke(app, ["data", "verify", "imagenet"])
    assert r.exit_code == 2 and "unknown dataset" in _err(r)
