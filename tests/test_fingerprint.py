"""The data fingerprint a training job records at start, and its check against the reference split."""

from __future__ import annotations

import json

from ctxsim.data.fake import make_fake_benchmark
from ctxsim.data.fingerprint import (
    FINGERPRINT_NAME,
    REFERENCE_COUNTS,
    data_fingerprint,
    fingerprint_deviations,
    fingerprint_matches_reference,
)
from ctxsim.train import recipe
from ctxsim.train.build import build_run_data


def _reference_fp(dataset):
    splits = {name: {"images": n, "classes": c, "file": None, "sha256": None}
              for name, (n, c) in REFERENCE_COUNTS[dataset].items()}
    return {"version": 1, "dataset": dataset, "splits": splits, "val_classes": None}


def test_generated_cub_tree_is_not_the_reference(tmp_path):
    make_fake_benchmark("cub", tmp_path, train_classes=3, test_classes=2, per_class=2)
    cfg = recipe("cub", "hybrid", 256).with_overrides(root=str(tmp_path))
    fp = data_fingerprint(build_run_data(cfg), "cub")
    assert fp["splits"]["train"]["images"] == 6 and fp["splits"]["train"]["classes"] == 3
    assert fp["splits"]["test"]["images"] == 4 and fp["splits"]["test"]["classes"] == 2
    assert fp["splits"]["train"]["file"] == "cub200_train.txt" and len(fp["splits"]["train"]["sha256"]) == 64
    dev = fingerprint_deviations(fp)
    assert "train images 6≠5864" in dev and "test classes 2≠100" in dev
    assert any(d.startswith("train split file sha256") for d in dev)
    assert not fingerprint_matches_reference(fp)


def test_reference_counts_match_and_shipped_split_hashes():
    fp = _reference_fp("sop")
    assert fingerprint_matches_reference(fp)
    cub = _reference_fp("cub")
    assert "train split file sha256 None≠5926ccd3" in fingerprint_deviations(cub)
    from ctxsim.data.common import sha256_file, shipped_split

    cub["splits"]["train"]["sha256"] = sha256_file(shipped_split("cub200_train.txt"))
    cub["splits"]["test"]["sha256"] = sha256_file(shipped_split("cub200_test.txt"))
    assert fingerprint_matches_reference(cub)
    cub["val_classes"] = 20
    assert fingerprint_deviations(cub) == ["val_classes 20 (classes held out of train)"]


def test_small_dataset_and_missing_fingerprint():
    assert fingerprint_deviations(None) == ["no data fingerprint recorded"]
    cfg = recipe("synthetic", "hybrid", 256)
    fp = data_fingerprint(build_run_data(cfg), "synthetic")
    assert fp["splits"]["train"] == {"images": 64, "classes": 8, "file": None, "sha256": None}
    assert fingerprint_deviations(fp) == ["dataset synthetic has no reference split"]


def test_training_records_the_fingerprint_in_the_folder_and_start_event(tmp_path):
    from ctxsim.train.engine import fit_in_dir
    from ctxsim.train.events import ListSink

    cfg = recipe("synthetic", "hybrid", 256).with_overrides(epochs=1, max_steps_per_epoch=1, device="cpu",
                                                            num_workers=0)
    sink = ListSink()
    fit_in_dir(cfg, tmp_path, sink=sink)
    stored = json.loads((tmp_path / FINGERPRINT_NAME).read_text())
    start = next(e for e in sink.events if e.kind == "start")
    assert start.data["fingerprint"] == stored and stored["splits"]["test"]["images"] == 64
