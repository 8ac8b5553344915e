"""Human CLI output: whole values through a pipe, --format tsv, one unit (percent) for retrieval
metrics in human output while JSON keeps fractions, and `show`'s best following the metric's direction."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from ctxsim.cli.main import app
from ctxsim.names import METRIC_DIRECTION, metric_direction
from ctxsim.registry import jobs
from ctxsim.registry.db import open_registry
from ctxsim.registry.sink import write_points
from ctxsim.runner.probe import probe_config

LONG_NAME = "a-rather-long-job-name-that-a-narrow-table-would-cut-" + "x" * 40


@pytest.fixture
def db(tmp_path):
    """A registry with one job: a long name, R@1 = 0.9375 (best) and images/s 10, 30, 20."""
    path = tmp_path / "experiments.db"
    reg = open_registry(path)
    jid = jobs.enqueue(reg, probe_config(label="out"), name=LONG_NAME)
    with reg.begin() as s:
        write_points(reg, s, jid, [("R@1", 1, 0.90, 0.0), ("R@1", 2, 0.9375, 0.0), ("R@1", 3, 0.92, 0.0),
                                   ("train/loss", 1, 0.5, 0.0), ("train/loss", 2, 0.25, 0.0),
                                   ("train/images_per_s", 1, 10.0, 0.0), ("train/images_per_s", 2, 30.0, 0.0),
                                   ("train/images_per_s", 3, 20.0, 0.0),
                                   ("train/lr", 1, 0.1, 0.0), ("train/lr", 2, 0.01, 0.0)])
    reg.dispose()
    return path


def piped(*args: str, db=None) -> subprocess.CompletedProcess:
    """The real command with stdout a pipe (not a terminal), as in `ctxsim ls | cat`."""
    argv = [sys.executable, "-m", "ctxsim.cli.main", *args] + (["--db", str(db)] if db else [])
    env = {**os.environ, "COLUMNS": "80"}
    env.pop("CTXSIM_DB", None)
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)


def test_ls_through_a_pipe_prints_whole_values_and_percent(db):
    r = piped("ls", db=db)
    assert r.returncode == 0, r.stderr
    assert "…" not in r.stdout and LONG_NAME in r.stdout
    assert "R@1 %" in r.stdout and "93.75" in r.stdout and "0.9375" not in r.stdout
    assert "\x1b[" not in r.stdout  # no colour codes into a file or grep


def test_ls_tsv_and_json_units(db):
    r = CliRunner().invoke(app, ["ls", "--format", "tsv", "--db", str(db)])
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    header = lines[0].split("\t")
    row = dict(zip(header, lines[1].split("\t")))
    assert len(lines) == 2 and len(lines[1].split("\t")) == len(header)
    assert row["name"] == LONG_NAME and row["R@1_pct"] == "93.75" and row["train_loss"] == "0.25"
    # JSON keeps its documented unit: fractions
    rows = json.loads(CliRunner().invoke(app, ["ls", "--json", "--db", str(db)]).stdout)
    assert rows[0]["summaries"]["R@1"]["best"] == pytest.approx(0.9375)
    r = CliRunner().invoke(app, ["ls", "--format", "csv", "--db", str(db)])
    assert r.exit_code == 2 and "--format must be table or tsv" in r.stderr


def test_show_best_follows_the_metric_direction_and_uses_percent(db):
    r = piped("show", "1", db=db)
    assert r.returncode == 0, r.stderr
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines() if ln.startswith("  ") and ln.split()}
    assert "30 @ 2 (higher is better)" in lines["train/images_per_s"]  # its maximum, not its minimum
    assert "0.25 @ 2 (lower is better)" in lines["train/loss"]
    assert "93.75 @ 2" in lines["R@1"] and "92.00 @ 3" in lines["R@1"]
    assert lines["train/lr"].split()[1] == "-"  # a schedule has no best
    assert "…" not in r.stdout and LONG_NAME in r.stdout
    d = json.loads(piped("show", "1", "--json", db=db).stdout)
    assert d["summaries"]["train/images_per_s"]["best"] == 30.0


@pytest.mark.parametrize("key, direction", [
    ("train/loss", "lower"), ("epoch/loss", "lower"), ("train/ctx", "lower"), ("val/time_s", "lower"),
    ("train/images_per_s", "higher"), ("R@1", "higher"), ("R@1000", "higher"), ("MAP@R", "higher"),
    ("RP", "higher"), ("train_R@1", "higher"), ("R@1@epoch5", "higher"), ("train/lr", None),
])
def test_metric_direction_is_declared_once(key, direction):
    assert metric_direction(key) == direction
    assert set(METRIC_DIRECTION.values()) <= {"higher", "lower", None}
