"""Preflight (issue 14): a run that could never start ends with one line, exit code 2 and no job row."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from ctxsim.cli.main import app
from ctxsim.data.fake import corrupt_file, make_fake_benchmark
from ctxsim.errors import ConfigError, DataError
from ctxsim.registry.db import open_registry
from ctxsim.registry.models import Job
from ctxsim.train.configure import configure
from ctxsim.train.preflight import check_config, preflight

runner = CliRunner()


def _job_rows(db: str) -> int:
    reg = open_registry(db)
    try:
        with reg.Session() as s:
            return int(s.scalar(select(func.count()).select_from(Job)))
    finally:
        reg.dispose()


@pytest.fixture
def fake_cub(tmp_path):
    make_fake_benchmark("cub", tmp_path / "data", train_classes=4, test_classes=2, per_class=3)
    return tmp_path / "data"


def _run_refused(tmp_path, args, needle):
    db = str(tmp_path / "reg.db")
    open_registry(db).dispose()  # an existing, empty registry: preflight must add nothing to it
    r = runner.invoke(app, ["run", *args, "--db", db])
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], r.output
    assert _job_rows(db) == 0
    return lines[0]


def test_missing_data_root(tmp_path):
    _run_refused(tmp_path, ["-d", "cub", "-l", "hybrid", "--root", str(tmp_path / "nonexistent")],
                 "nonexistent does not exist")


def test_missing_split_file(tmp_path, fake_cub):
    (fake_cub / "CUB_200_2011" / "images.txt").unlink(missing_ok=True)
    for f in (fake_cub / "CUB_200_2011").glob("*.txt"):
        f.unlink()
    _run_refused(tmp_path, ["-d", "cub", "-l", "hybrid", "--root", str(fake_cub)], "cub")


def test_unreadable_image_in_the_sample_is_named(tmp_path, fake_cub):
    from ctxsim.data import build_data

    bad = build_data("cub", root=fake_cub).train.path(0)
    corrupt_file(bad)
    line = _run_refused(tmp_path, ["-d", "cub", "-l", "hybrid", "--root", str(fake_cub)], "unreadable")
    assert bad in line.replace("\n", "")


def test_missing_image_in_the_sample_is_named(tmp_path, fake_cub):
    from ctxsim.data import build_data

    gone = build_data("cub", root=fake_cub).train.path(0)
    import os

    os.unlink(gone)
    _run_refused(tmp_path, ["-d", "cub", "-l", "hybrid", "--root", str(fake_cub)], "missing")


def test_cuda_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _run_refused(tmp_path, ["-d", "synthetic", "-l", "hybrid", "--device", "cuda"], "CUDA is not available")


def test_imagenet_weights_need_resnet50(tmp_path):
    _run_refused(tmp_path, ["-d", "synthetic", "-l", "hybrid", "--set", "model.arch=tiny",
                            "--backbone-weights", "imagenet"], "ImageNet weights exist only for arch resnet50")


def test_sampler_cannot_fill_a_batch(tmp_path, fake_cub):
    _run_refused(tmp_path, ["-d", "cub", "-l", "hybrid", "--root", str(fake_cub)], "cannot fill")


def test_negative_seed(tmp_path):
    _run_refused(tmp_path, ["-d", "synthetic", "-l", "hybrid", "--seed", "-5"], "seed must be an integer from 0")


def test_gpu_ids_that_do_not_exist(tmp_path):
    _run_refused(tmp_path, ["-d", "synthetic", "-l", "hybrid", "--gpus", "99"], "no GPU 99 on this machine")


def test_gpu_ids_are_checked_for_detach_too(tmp_path):
    _run_refused(tmp_path, ["-d", "synthetic", "-l", "hybrid", "--gpus", "99", "--detach"], "no GPU 99")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers(tmp_path, value):
    _run_refused(tmp_path, ["-d", "synthetic", "-l", "hybrid", "--set", f"lr={value}"], "lr must be")


def test_non_finite_loss_option(tmp_path):
    _run_refused(tmp_path, ["-d", "synthetic", "-l", "hybrid", "--set", "loss.lam=nan"],
                 "loss.lam must be a finite number")


def test_unknown_loss_option(tmp_path):
    _run_refused(tmp_path, ["-d", "synthetic", "-l", "hybrid", "--set", "loss.nosuch=3"],
                 "loss 'hybrid' has no option nosuch")


def test_no_check_skips_host_checks_for_detach_only(tmp_path):
    db = str(tmp_path / "reg.db")
    args = ["run", "-d", "cub", "-l", "hybrid", "--root", str(tmp_path / "elsewhere"), "--db", db, "--json"]
    r = runner.invoke(app, [*args, "--detach", "--no-check"])
    assert r.exit_code == 0, r.output
    assert _job_rows(db) == 1
    # the config checks still run with --no-check
    bad = runner.invoke(app, [*args, "--detach", "--no-check", "--seed", "-1"])
    assert bad.exit_code == 2 and "seed" in bad.output
    fg = runner.invoke(app, [*args, "--no-check"])
    assert fg.exit_code == 2 and "--detach" in fg.output
    assert _job_rows(db) == 1


def test_library_preflight_raises_one_line_errors(tmp_path, fake_cub):
    cfg = configure("cub", "hybrid", 256, root=str(fake_cub))
    check_config(cfg)  # the config alone is fine
    with pytest.raises(ConfigError, match="cannot fill"):
        preflight(cfg)
    preflight(cfg, host=False)
    with pytest.raises(DataError, match="does not exist"):
        preflight(configure("cub", "hybrid", 256, root=str(tmp_path / "none")))
    ok = configure("cub", "hybrid", 256, root=str(fake_cub), sets=["batch_size=8", "sampler.num_batches=2"])
    preflight(ok, device="cpu")


# ---- sweep: the same checks for every config of the grid, before anything is queued ----------------
def _sweep(tmp_path, *args):
    db = str(tmp_path / "reg.db")
    open_registry(db).dispose()
    r = runner.invoke(app, ["sweep", *args, "--db", db, "--gpus-per-job", "0"])
    return r, _job_rows(db)


def test_sweep_refuses_the_whole_grid_when_one_config_cannot_start(tmp_path):
    r, rows = _sweep(tmp_path, "-d", "synthetic,cub", "-l", "hybrid", "--seeds", "2", "--epochs", "1",
                     "--root", str(tmp_path / "nonexistent"))
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "cub/hybrid/256 seed=0:" in lines[0] and "does not exist" in lines[0], r.output
    assert rows == 0  # the synthetic configs, which could start, were not queued either


def test_sweep_checks_each_seed_and_the_config_checks_survive_no_check(tmp_path):
    r, rows = _sweep(tmp_path, "-d", "synthetic", "-l", "hybrid", "--seeds", "0,-3", "--no-check")
    assert r.exit_code == 2 and "seed=-3: seed must be an integer from 0" in r.output, r.output
    assert rows == 0
    r, rows = _sweep(tmp_path, "-d", "synthetic", "-l", "hybrid", "--set", "lr=1e-4,nan")
    assert r.exit_code == 2 and "lr must be a finite number" in r.output and rows == 0, r.output


def test_sweep_no_check_skips_the_host_checks(tmp_path):
    args = ("-d", "cub", "-l", "hybrid,contrastive", "--root", str(tmp_path / "elsewhere"))
    r, rows = _sweep(tmp_path, *args)
    assert r.exit_code == 2 and rows == 0, r.output
    r, rows = _sweep(tmp_path, *args, "--no-check")
    assert r.exit_code == 0, r.output
    assert rows == 2


def test_sweep_checks_the_sampler_against_the_data(tmp_path, fake_cub):
    r, rows = _sweep(tmp_path, "-d", "cub", "-l", "hybrid", "--root", str(fake_cub))
    assert r.exit_code == 2 and "cannot fill" in r.output and rows == 0, r.output
    r, rows = _sweep(tmp_path, "-d", "cub", "-l", "hybrid", "--root", str(fake_cub), "--seeds", "2",
                     "--set", "batch_size=8", "--set", "sampler.num_batches=2")
    assert r.exit_code == 0, r.output
    assert rows == 2
