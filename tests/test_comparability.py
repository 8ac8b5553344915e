"""Comparability of runs with the reference numbers (issue 13): config = the cell's recipe, data =
the reference split (the job's data fingerprint), profile = reference; Δ only for comparable rows."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ctxsim.cli.main import app
from ctxsim.data.fingerprint import REFERENCE_COUNTS, REFERENCE_SHA256_PREFIX
from ctxsim.registry.models import Job, JobEvent, Summary
from ctxsim.report.comparability import NON_RESULT_KEYS, NOT_COMPARABLE, comparability, config_deviations
from ctxsim.report.compare import compare_rows
from ctxsim.report.render import to_markdown
from ctxsim.train.configure import configure
from ctxsim.train.recipes import recipe


def reference_fingerprint(dataset: str) -> dict:
    """A fingerprint with the reference split's counts and split-file hashes (faked: no 11,788 images)."""
    splits = {}
    for name, (images, classes) in REFERENCE_COUNTS[dataset].items():
        prefix = REFERENCE_SHA256_PREFIX.get(dataset, {}).get(name, "")
        splits[name] = {"images": images, "classes": classes, "file": f"{name}.txt",
                        "sha256": (prefix + "0" * 64)[:64] if prefix else None}
    return {"version": 1, "dataset": dataset, "splits": splits, "val_classes": None}


def add_run(reg, cfg, r1: float, fingerprint=None, status="done", map_r=0.3, per_query=None) -> int:
    """A finished job at the registry level: config, a start event carrying the fingerprint (as the
    engine records it), summaries and the sink's done event."""
    with reg.begin() as s:
        j = Job(dataset=cfg.dataset, loss=cfg.loss, resolution=cfg.resolution, seed=cfg.seed,
                config_json=cfg.to_json(), config_hash=cfg.config_hash(), status=status)
        s.add(j)
        s.flush()
        if fingerprint is not None:
            s.add(JobEvent(job_id=j.id, kind="start", message="", payload={"fingerprint": fingerprint}))
        if status == "done":
            s.add(Summary(job_id=j.id, key="R@1", best=r1, best_step=80, last=r1, last_step=80))
            s.add(Summary(job_id=j.id, key="MAP@R", best=map_r, best_step=80, last=map_r, last_step=80))
            done = {"metrics": {"R@1": r1, "MAP@R": map_r}, "selected": cfg.select, "selected_on": "test"}
            if per_query is not None:
                done["per_query"] = str(per_query)
            s.add(JobEvent(job_id=j.id, kind="done", message="", payload=done))
        return j.id


def test_generated_cub_tiny_run_is_not_comparable(tmp_path, monkeypatch):
    """The issue's new-user run: a 1-epoch tiny CNN on an 8-class generated CUB-layout tree."""
    from ctxsim.data.fake import make_fake_benchmark

    make_fake_benchmark("cub", tmp_path / "data", train_classes=4, test_classes=4, per_class=4)
    db = str(tmp_path / "e.db")
    runner = CliRunner()
    r = runner.invoke(app, ["run", "-d", "cub", "-l", "hybrid", "--root", str(tmp_path / "data"),
                            "--set", "model.arch=tiny", "--set", "batch_size=16", "--set", "epochs=1",
                            "--set", "num_workers=0", "--backbone-weights", "none", "--db", db])
    assert r.exit_code == 0, r.output
    out = runner.invoke(app, ["compare", "--json", "--metric", "R@1", "--db", db])
    (row,) = json.loads(out.stdout)
    assert row["comparable"] is False
    devs = row["deviations"]
    assert "model.arch tiny≠resnet50" in devs and "epochs 1≠80" in devs and "batch_size 16≠128" in devs
    assert "train images 16≠5864" in " ".join(devs)  # the data is not the reference split
    assert not any(d.startswith(("num_workers", "root", "seed", "device")) for d in devs)
    assert row["paper"] == 68.687 and row["delta"] is not None  # JSON keeps the plain difference
    md = runner.invoke(app, ["compare", "--format", "markdown", "--metric", "R@1", "--db", db]).stdout
    line = [x for x in md.splitlines() if x.startswith("| cub |")][0]
    assert f"{NOT_COMPARABLE} (a)" in line and "+" not in line.split("|")[-4]  # no Δ number
    assert "(a) batch_size 16≠128" in md and "model.arch tiny≠resnet50" in md
    table = runner.invoke(app, ["compare", "--metric", "R@1", "--db", db]).stdout
    assert NOT_COMPARABLE in table and "not comparable" in table


def test_recipe_run_on_the_reference_split_is_comparable(registry):
    # the recipe with only keys that cannot matter changed (seed, root, device, workers, name)
    cfg = recipe("cub", "hybrid", 256).with_overrides(seed=4, root="/data", device="cuda", num_workers=2, name="x")
    jid = add_run(registry, cfg, 0.69, fingerprint=reference_fingerprint("cub"))
    (row,) = compare_rows(registry, metrics=["R@1"])
    assert row["comparable"] is True and row["deviations"] == []
    assert row["delta"] == pytest.approx(69.0 - 68.687)
    md = to_markdown([row])
    assert "+0.31" in md and NOT_COMPARABLE not in md
    assert comparability(registry, [jid]) == {jid: {"comparable": True, "deviations": []}}


def test_each_condition_breaks_comparability(registry):
    fp = reference_fingerprint("cub")
    ok = recipe("cub", "hybrid", 256)
    no_fp = add_run(registry, ok, 0.68)
    fixed = add_run(registry, configure("cub", "hybrid", 256, profile="fixed"), 0.68, fingerprint=fp)
    wrong_data = dict(fp, splits=dict(fp["splits"], train={**fp["splits"]["train"], "images": 5000}))
    other_data = add_run(registry, ok.with_overrides(seed=1), 0.68, fingerprint=wrong_data)
    lam = add_run(registry, ok.with_sets(["loss.lam=0.5"]), 0.68, fingerprint=fp)
    got = comparability(registry, [no_fp, fixed, other_data, lam])
    assert got[no_fp]["deviations"] == ["no data fingerprint recorded"]
    assert "profile fixed≠reference" in got[fixed]["deviations"]
    assert got[other_data]["deviations"] == ["data: train images 5000≠5864"]
    assert got[lam]["deviations"] == ["loss.lam 0.5≠0.4"]  # worded as --set spells it
    assert not any(v["comparable"] for v in got.values())


def test_config_deviations_wording_and_ignored_keys():
    cfg = configure("cub", "hybrid", 256, sets=["model.arch=tiny", "batch_size=16"], epochs=1, seed=3,
                    device="cpu", root="/elsewhere")
    assert config_deviations(cfg.to_json(), "cub", "hybrid", 256)[:3] == [
        "batch_size 16≠128", "model.arch tiny≠resnet50", "epochs 1≠80"]
    assert {"seed", "root", "name", "device", "num_workers"} <= set(NON_RESULT_KEYS)
    # a cell with no recipe (224 has no iNat) says so instead of failing
    assert config_deviations(cfg.to_json(), "inat", "hybrid", 224)[0].startswith("no recipe for inat/hybrid/224")


def test_a_vit_run_is_never_comparable_with_the_resnet50_tables_and_says_why():
    """The vit-s16-224 recipe (or a timm trunk set by hand) leads its deviations with the trunk; the
    rest is listed against its own recipe (an untouched ViT run lists nothing else but the data)."""
    from ctxsim.report.comparability import run_deviations, trunk_reason

    vit = configure("cub", "hybrid", recipe_family="vit-s16-224")
    devs = run_deviations(vit.to_json(), "cub", "hybrid", 224, None)
    assert devs == ["recipe vit-s16-224: a DINO ViT-S/16 trunk; the paper's tables are ResNet-50",
                    "no data fingerprint recorded"]
    devs = run_deviations(vit.with_sets(["lr=1e-5"]).to_json(), "cub", "hybrid", 224, None)
    assert devs[1] == "lr 1e-05≠5e-06"
    by_hand = configure("cub", "hybrid", 224, sets=["model.arch=timm:convnext_tiny"])
    assert trunk_reason(by_hand.to_json()) == "trunk timm:convnext_tiny: the paper's tables are ResNet-50"
    assert run_deviations(by_hand.to_json(), "cub", "hybrid", 224, None)[:2] == [
        "trunk timm:convnext_tiny: the paper's tables are ResNet-50", "model.arch timm:convnext_tiny≠resnet50"]
    assert trunk_reason(configure("cub", "hybrid", 224).to_json()) is None


def _icons_fingerprint(digest: str) -> dict:
    return {"version": 1, "dataset": "icons", "val_classes": None,
            "splits": {"train": {"images": 3118, "classes": 514}, "test": {"images": 3165, "classes": 528}},
            "source": {"themes": {"Papirus": "papirus-icon-theme 20230104-2"}, "split_sha256": {}, "digest": digest}}


def test_icons_runs_pool_seeds_only_on_the_same_icon_data(registry):
    """icons is built on the user's machine: runs pool over seeds (n, mean, 95% interval) when their
    data digest matches, and runs on other theme versions or splits get a row of their own."""
    same = [add_run(registry, recipe("icons", "hybrid", 256).with_overrides(seed=s), 0.30 + 0.01 * s,
                    fingerprint=_icons_fingerprint("a" * 16), map_r=0.10 + 0.01 * s) for s in range(3)]
    other = add_run(registry, recipe("icons", "hybrid", 256).with_overrides(seed=0), 0.5,
                    fingerprint=_icons_fingerprint("b" * 16), map_r=0.2)
    rows = [r for r in compare_rows(registry, metrics=["MAP@R"]) if r["dataset"] == "icons"]
    assert len(rows) == 2
    pooled = next(r for r in rows if r["run_ids"] == same)
    assert pooled["n"] == 3 and pooled["seeds"] == [0, 1, 2] and pooled["variant"] == "data=aaaaaaaa"
    assert pooled["final_mean"] == pytest.approx(11.0) and pooled["final_ci_low"] < 11.0 < pooled["final_ci_high"]
    lone = next(r for r in rows if r["run_ids"] == [other])
    assert lone["variant"] == "data=bbbbbbbb" and lone["final_ci"] is None
