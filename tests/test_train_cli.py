"""``ctxsim run`` and ``ctxsim eval``: foreground run with JSON result, one-line errors, eval of a saved model."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ctxsim.cli.main import app

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_thread")]

runner = CliRunner()


def test_run_json_then_eval_same_metrics(tmp_path):
    rd = tmp_path / "run"
    args = ["run", "--dataset", "synthetic", "--loss", "hybrid", "--epochs", "1", "--seed", "3", "--device", "cpu",
            "--set", "max_steps_per_epoch=2", "--set", "deterministic=true", "--run-dir", str(rd), "--json",
            "--name", "smoke", "--tag", "t1"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["status"] == "done" and out["steps"] == 2 and out["config"]["seed"] == 3
    assert out["config"]["name"] == "smoke" and out["config"]["tags"] == ["t1"]
    assert {"R@1", "MAP@R"} <= set(out["metrics"])
    assert (rd / "checkpoint.pt").is_file() and (rd / "events.jsonl").is_file() and (rd / "result.json").is_file()
    kinds = [json.loads(line)["kind"] for line in (rd / "events.jsonl").read_text().splitlines()]
    assert kinds[0] == "start" and kinds[-1] == "done"

    e = runner.invoke(app, ["eval", str(rd / "checkpoint.pt"), "--device", "cpu", "--json"])
    assert e.exit_code == 0, e.output
    got = json.loads(e.stdout)
    assert got["dataset"] == "synthetic"
    assert got["metrics"] == pytest.approx(out["metrics"])


def test_run_human_output_prints_table(tmp_path):
    r = runner.invoke(app, ["run", "-d", "digits", "-l", "contrastive", "--epochs", "1", "--device", "cpu",
                            "--set", "max_steps_per_epoch=1", "--run-dir", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    assert "MAP@R" in r.stdout and "R@1" in r.stdout


@pytest.mark.parametrize("args, needle", [
    (["--dataset", "imagenet", "--loss", "hybrid"], "unknown dataset 'imagenet'; choose from: cub"),
    (["--dataset", "cub", "--loss", "arcface"], "unknown loss 'arcface'; choose from: hybrid"),
    (["--dataset", "digits", "--loss", "hybrid", "--set", "lrr=1e-4"], "unknown config key 'lrr'; did you mean lr"),
    (["--dataset", "digits", "--loss", "hybrid", "--set", "epochs=ten"], "epochs expects an integer"),
    (["--dataset", "inat", "--loss", "hybrid", "--resolution", "224"], "224 recipes cover cub, cars, sop"),
    (["--dataset", "digits", "--loss", "hybrid", "--device", "tpu"], "--device must be"),
    (["--dataset", "digits", "--loss", "hybrid", "--recipe", "vit-s16-224"], "covers cub, cars, sop, inshop"),
    (["--dataset", "cub", "--loss", "hybrid", "--recipe", "vit-s16-224", "-r", "256"], "224 px; drop --resolution 256"),
    (["--dataset", "cub", "--loss", "hybrid", "--recipe", "vit"], "unknown recipe 'vit'; choose from paper, vit-s16-224"),
])
def test_run_bad_input_is_one_line_exit_2(args, needle, tmp_path):
    r = runner.invoke(app, ["run", *args, "--run-dir", str(tmp_path / "x")])
    assert r.exit_code == 2
    assert needle in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "x" / "checkpoint.pt").exists()


def test_sweep_with_the_vit_recipe_queues_its_224_configs(tmp_path):
    r = runner.invoke(app, ["sweep", "-d", "cub,sop", "-l", "hybrid", "--recipe", "vit-s16-224", "--dry-run", "--json",
                            "--no-check", "--db", str(tmp_path / "e.db")])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    rows = rows["jobs"] if isinstance(rows, dict) else rows
    assert [(x["dataset"], x["resolution"], x["epochs"]) for x in rows] == [("cub", 224, 100), ("sop", 224, 150)]


def test_eval_missing_checkpoint_exit_4(tmp_path):
    r = runner.invoke(app, ["eval", str(tmp_path / "nope.pt")])
    assert r.exit_code == 4 and "no such checkpoint" in r.output


def test_eval_rejects_a_non_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    r = runner.invoke(app, ["eval", str(bad)])
    assert r.exit_code == 2 and "cannot read checkpoint" in r.output and "Traceback" not in r.output


def test_ctrl_c_stops_with_a_checkpoint_and_the_same_command_resumes(tmp_path):
    import os
    import subprocess
    import sys

    from proc_helpers import interrupt_after_first_step

    rd = tmp_path / "run"
    cmd = [sys.executable, "-m", "ctxsim.cli.main", "run", "-d", "synthetic", "-l", "contrastive", "--epochs", "2",
           "--device", "cpu", "--set", "sampler.num_batches=150", "--run-dir", str(rd), "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    events = rd / "events.jsonl"
    rc, out, err = interrupt_after_first_step(cmd, events, env)
    assert rc == 130, err
    assert "Traceback" not in err and "resume" in err
    from ctxsim.train.checkpoint import load_checkpoint

    ck = load_checkpoint(rd / "checkpoint.pt")
    assert ck["status"] == "stopped" and ck["step"] >= 1
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    res = json.loads(again.stdout)
    assert res["status"] == "done" and res["steps"] == 300
    kinds = [json.loads(line) for line in events.read_text().splitlines()]
    starts = [e for e in kinds if e["kind"] == "start"]
    assert len(starts) == 2 and starts[1]["resumed"] and starts[1]["step"] == ck["step"]


def test_run_is_recorded_in_the_registry_and_detach_only_queues(tmp_path):
    from ctxsim.registry.db import open_registry
    from ctxsim.registry.queries import job_detail, metric_series, runs_table

    db = str(tmp_path / "reg.db")
    args = ["run", "-d", "digits", "-l", "contrastive", "--epochs", "1", "--device", "cpu",
            "--set", "max_steps_per_epoch=3", "--json", "--db", db]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    reg = open_registry(db)
    job = job_detail(reg, out["id"])
    assert job["status"] == "done" and job["executor"] == "foreground" and job["epoch"] == 1
    series = metric_series(reg, out["id"])
    assert [s for s, _ in series["train/loss"]] == [1, 2, 3]
    assert series["R@1"][-1][1] == pytest.approx(out["metrics"]["R@1"])
    # the same config again: the finished folder is kept, the new job gets its own folder
    r2 = runner.invoke(app, args)
    assert r2.exit_code == 0, r2.output
    j2 = job_detail(reg, json.loads(r2.stdout)["id"])
    assert j2["run_dir"] != job["run_dir"] and j2["status"] == "done"
    # --detach queues for a worker and runs nothing
    r3 = runner.invoke(app, [*args[:-3], "--detach", "--json", "--db", db])
    assert r3.exit_code == 0, r3.output
    jid = json.loads(r3.stdout)["id"]
    assert [x["status"] for x in runs_table(reg, ids=[jid])] == ["queued"]
    bad = runner.invoke(app, ["run", "-d", "digits", "-l", "hybrid", "--gpus", "0,1", "--db", db])
    assert bad.exit_code == 2 and "--detach" in bad.output
    reg.dispose()


def test_eval_grid_writes_a_retrieval_picture(tmp_path):
    from PIL import Image

    from ctxsim.report.grid import grid_size

    rd = tmp_path / "run"
    r = runner.invoke(app, ["run", "-d", "digits", "-l", "contrastive", "--epochs", "1", "--device", "cpu",
                            "--set", "max_steps_per_epoch=2", "--run-dir", str(rd), "--json"])
    assert r.exit_code == 0, r.output
    png = tmp_path / "grid.png"
    e = runner.invoke(app, ["eval", str(rd / "checkpoint.pt"), "--grid", str(png), "--grid-k", "4",
                            "--grid-queries", "3", "--json"])
    assert e.exit_code == 0, e.output
    assert json.loads(e.stdout)["grid"] == str(png)
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == grid_size(3, 4)


def test_backbone_weights_option(tmp_path):
    bad = runner.invoke(app, ["run", "-d", "digits", "-l", "hybrid", "--backbone-weights", str(tmp_path / "no.pth")])
    assert bad.exit_code == 2 and "no.pth" in bad.output
    r = runner.invoke(app, ["run", "-d", "digits", "-l", "hybrid", "--backbone-weights", "none", "--detach", "--json"])
    assert r.exit_code == 0, r.output
    from ctxsim.registry.db import open_registry
    from ctxsim.registry.queries import job_detail

    reg = open_registry()
    cfg = json.loads(job_detail(reg, json.loads(r.stdout)["id"])["config_json"])
    assert cfg["model"]["backbone_weights"] is None
    reg.dispose()
