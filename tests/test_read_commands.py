"""The read commands stay light (never torch, faiss or scikit-learn), and the first-ten-minutes
refusals: a misspelt registry URL, an explicit --db in a missing folder, a tune whose trials could
never run. Timings live in benchmarks/cli.py, never here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ctxsim.cli.main import app

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "faiss", "sklearn")


@pytest.fixture(scope="module")
def bench_registry(tmp_path_factory) -> Path:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from cli import build  # benchmarks/cli.py: jobs with recipe configs, fingerprints, logs
    finally:
        sys.path.pop(0)
    path = tmp_path_factory.mktemp("reads") / "experiments.db"
    build(path, 30)
    return path


def _imported(args: list[str], db: Path) -> set[str]:
    env = {**os.environ, "CTXSIM_DB": str(db), "COLUMNS": "120"}
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "ctxsim.cli.main", *args], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-1500:]
    return {ln.rsplit("|", 1)[-1].strip() for ln in r.stderr.splitlines() if ln.startswith("import time:")}


@pytest.mark.parametrize("args", [["--help"], ["ls"], ["ls", "--json"], ["show", "1"], ["logs", "1"], ["compare"],
                                  ["baselines", "--dataset", "cub"], ["tune", "show"], ["data", "verify", "digits"]])
def test_read_commands_never_import_torch(bench_registry, args):
    mods = _imported(args, bench_registry)
    assert "ctxsim.cli.common" in mods  # the probe sees imports at all
    assert not [m for m in HEAVY if m in mods], f"{' '.join(args)} imports {[m for m in HEAVY if m in mods]}"


def test_compare_on_the_bench_registry_pools_comparable_runs(bench_registry):
    import json

    r = CliRunner().invoke(app, ["compare", "--json", "--db", str(bench_registry)])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert rows and any(row["comparable"] and row["delta"] is not None for row in rows)


@pytest.mark.parametrize("url, words", [
    ("postgres://nohost/x", "unknown scheme 'postgres'"),
    ("mysql://h/x", "postgresql+psycopg://"),
    ("postgresql+asyncpg://h/x", "unsupported PostgreSQL driver 'asyncpg'"),
])
def test_a_misspelt_registry_url_names_the_right_scheme(url, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["ls", "--db", url])
    assert r.exit_code == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_an_explicit_db_in_a_missing_folder_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CTXSIM_DB", raising=False)
    target = tmp_path / "no" / "such" / "x.db"
    for args in (["run", "-d", "digits", "-l", "hybrid"], ["sweep", "-d", "digits", "-l", "hybrid"], ["cancel", "1"]):
        r = CliRunner().invoke(app, [*args, "--db", f"sqlite:///{target}"])
        assert r.exit_code == 2 and "does not exist" in r.stderr, (args, r.output)
    assert list(tmp_path.iterdir()) == []
    r = CliRunner().invoke(app, ["sweep", "-d", "synthetic", "-l", "contrastive", "--gpus-per-job", "0"])
    assert r.exit_code == 0 and (tmp_path / "experiments.db").is_file()  # the default is created unasked


def test_tune_with_an_unfillable_batch_is_refused_before_any_row(tmp_path):
    from ctxsim.registry.db import open_registry
    from ctxsim.registry.models import Job

    db = tmp_path / "e.db"
    r = CliRunner().invoke(app, ["tune", "-d", "digits", "-l", "hybrid", "--study", "s", "--trials", "2",
                                 "--set", "val_classes=2", "--space", "lr=loguniform(1e-4,1e-2)", "--db", str(db)])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and len(r.stderr.strip().splitlines()) == 1 and "batch" in r.stderr
    if db.exists():
        reg = open_registry(db)
        with reg.Session() as s:
            assert s.query(Job).count() == 0
        reg.dispose()


def test_small_sets_are_verified_from_their_files(tmp_path):
    """fashion-mnist's label files are read whole and its image files by header and recorded length:
    wrong counts are exit 1, a damaged file is named (exit 2); digits is counted without scikit-learn."""
    import gzip
    import struct

    def idx(path: Path, dims: tuple[int, ...], data: bytes) -> None:
        with gzip.open(path, "wb") as f:
            f.write(bytes([0, 0, 8, len(dims)]) + struct.pack(">" + "I" * len(dims), *dims) + data)

    d = tmp_path / "fashion-mnist"
    d.mkdir()
    idx(d / "train-labels-idx1-ubyte.gz", (10,), bytes(range(10)))
    idx(d / "t10k-labels-idx1-ubyte.gz", (10,), bytes(range(10)))
    idx(d / "train-images-idx3-ubyte.gz", (10, 2, 2), bytes(40))
    idx(d / "t10k-images-idx3-ubyte.gz", (10, 2, 2), bytes(40))
    r = CliRunner().invoke(app, ["data", "verify", "fashion-mnist", "--root", str(tmp_path), "--json"])
    assert r.exit_code == 1 and '"train": 5' in r.stdout and "expected 30000" in r.stderr
    raw = (d / "t10k-images-idx3-ubyte.gz").read_bytes()
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(raw[:-4] + struct.pack("<I", 7))  # its recorded length is wrong
    r = CliRunner().invoke(app, ["data", "verify", "fashion-mnist", "--root", str(tmp_path)])
    assert r.exit_code == 2 and "t10k-images-idx3-ubyte.gz" in r.stderr and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["data", "verify", "digits"])
    assert r.exit_code == 0 and "train 901 images, test 896 images" in r.stderr


def test_the_command_table_names_what_each_module_registers():
    """main() registers only the module that owns the command: the table must match the modules."""
    import importlib

    import typer

    from ctxsim.cli.main import COMMAND_MODULES

    owners = {}
    for module in dict.fromkeys(COMMAND_MODULES.values()):
        group = typer.Typer()
        importlib.import_module(f"ctxsim.cli.{module}").register(group)
        names = [c.name or c.callback.__name__ for c in group.registered_commands]
        names += [g.name for g in group.registered_groups]
        owners.update({n: module for n in names})
    assert owners == COMMAND_MODULES
    listed = [c.name for c in app.registered_commands] + [g.name for g in app.registered_groups]
    assert sorted(listed) == sorted(COMMAND_MODULES)  # the full app (help) has every command


@pytest.mark.parametrize("argv, word", [
    ([], None), (["--help"], None), (["ls"], "ls"), (["--lock-timeout", "5", "show", "1"], "show"),
    (["--lock-timeout=5", "tune", "show"], "tune"), (["--version"], None), (["nosuch", "x"], "nosuch"),
])
def test_the_command_word_skips_root_options(argv, word):
    from ctxsim.cli.main import command_word

    assert command_word(argv) == word


def test_a_lazily_built_command_behaves_as_in_the_full_app(bench_registry):
    """`ctxsim ls` through main() (one module registered) prints what the full app prints; an
    unknown command still lists the choices; root options before the command still apply."""
    env = {**os.environ, "CTXSIM_DB": str(bench_registry), "COLUMNS": "120"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "ctxsim.cli.main", *args], env=env, capture_output=True,
                              text=True, timeout=120)

    lazy = cli("--lock-timeout", "2", "ls", "--json")
    assert lazy.returncode == 0, lazy.stderr
    full = CliRunner().invoke(app, ["ls", "--json", "--db", str(bench_registry)])
    assert full.exit_code == 0 and lazy.stdout == full.stdout
    bad = cli("nosuch")
    assert bad.returncode == 2 and "No such command 'nosuch'" in bad.stderr
    top = cli("--help")
    assert top.returncode == 0 and all(name in top.stdout for name in ("compare", "tune", "ablation-table"))
    assert cli("--lock-timeout", "-1", "ls").returncode == 2  # the root callback still validates
