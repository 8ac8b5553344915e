"""PNG outputs: learning curves (`ctxsim report`) and the retrieval picture, from seeded registries
and from a tiny real run (queued, run in the foreground, recorded by the registry sink)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from ctxsim.cli.main import app
from ctxsim.registry.models import Job, Metric, Summary
from ctxsim.report import grid as G
from ctxsim.report.plots import OVERLAY_SIZE, RUN_SIZE, write_report


def _png(path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()  # decodes the whole file: a truncated PNG fails here
        return im.size


# --- retrieval picture -------------------------------------------------------------------------


def _cell_origin(row: int, col: int, tile: int) -> tuple[int, int]:
    cell = tile + 2 * G.BORDER
    x = G.MARGIN + col * (cell + G.GAP) + (G.SEPARATOR if col else 0)
    y = G.MARGIN + G.HEADER + row * (cell + G.CAPTION + G.GAP)
    return x, y


@pytest.mark.parametrize("shape", [(3, 20, 14), (1, 12, 12), (12, 12), (40, 30, 3)])
def test_grid_outlines_hits_green_and_misses_red(tmp_path, shape):
    rng = np.random.default_rng(0)
    gallery = [rng.normal(size=shape).astype(np.float32) for _ in range(10)]
    g_labels = [i % 3 for i in range(10)]
    queries, q_labels = gallery[:3], g_labels[:3]
    nb = [[3, 1, 6, 2], [4, 9, 0, 7], [5, 8, 1, 2]]
    tile = 40
    out = G.write_retrieval_grid(tmp_path / "g.png", queries, gallery, nb, q_labels, g_labels, k=4, tile=tile)
    assert _png(tmp_path / "g.png") == G.grid_size(3, 4, tile) == out["size"]
    expected = [[g_labels[g] == q_labels[i] for g in row] for i, row in enumerate(nb)]
    assert out["hits"] == expected
    px = Image.open(tmp_path / "g.png").convert("RGB")
    for i in range(3):
        assert px.getpixel(tuple(c + 1 for c in _cell_origin(i, 0, tile))) == G.QUERY_COLOR
        for j in range(4):
            color = px.getpixel(tuple(c + 1 for c in _cell_origin(i, j + 1, tile)))
            assert color == (G.HIT_COLOR if expected[i][j] else G.MISS_COLOR)


def test_grid_rejects_inconsistent_inputs(tmp_path):
    imgs = [np.zeros((8, 8), np.uint8)] * 3
    with pytest.raises(ValueError, match="neighbours"):
        G.write_retrieval_grid(tmp_path / "g.png", imgs[:2], imgs, [[0, 1]], [0, 1], [0, 1, 2], k=2)
    with pytest.raises(ValueError, match="neighbours"):
        G.write_retrieval_grid(tmp_path / "g.png", imgs[:1], imgs, [[0]], [0], [0, 1, 2], k=2)
    assert not (tmp_path / "g.png").exists()


def test_top_k_excludes_self_when_query_is_gallery():
    import torch

    emb = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), dim=1)
    nb = G.top_k(emb[[0, 2]], emb, 2, exclude_self=[0, 2])
    assert nb.tolist() == [[1, 3], [3, 1]]
    assert G.top_k(emb[[0]], emb, 1).tolist() == [[0]]


def test_retrieval_grid_from_given_embeddings(tmp_path):
    """The ``ctxsim eval --grid`` path: embeddings computed by the evaluation, no model call."""
    import torch
    from torch.utils.data import TensorDataset

    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    images = torch.rand(6, 3, 16, 16)
    emb = torch.nn.functional.normalize(torch.eye(3)[labels] + 0.01 * torch.arange(6.0)[:, None], dim=1)
    ds = TensorDataset(images, labels)
    out = G.retrieval_grid(None, ds, tmp_path / "g.png", k=2, n_queries=6, tile=32,
                           embeddings=(emb, labels, None, None))
    assert out["queries"] == list(range(6))
    assert [row[0] for row in out["hits"]] == [True] * 6  # nearest other image has the same label
    assert out["precision"] == pytest.approx(0.5)
    assert _png(tmp_path / "g.png") == G.grid_size(6, 2, 32)
    # with a separate gallery nothing is excluded: a query's twin in the gallery comes first
    out2 = G.retrieval_grid(None, ds, tmp_path / "g2.png", gallery=ds, k=1, n_queries=2, tile=32,
                            embeddings=(emb, labels, emb, labels))
    assert out2["precision"] == 1.0


# --- curves from a seeded registry -------------------------------------------------------------


@pytest.fixture
def curves_registry(registry):
    with registry.begin() as s:
        for seed in (0, 1):
            j = Job(dataset="cub", loss="hybrid", resolution=256, seed=seed, config_json="{}",
                    config_hash=str(seed), status="done")
            s.add(j)
            s.flush()
            for step in range(1, 31):
                s.add(Metric(job_id=j.id, key="train/loss", step=step, value=1.0 / step, time=0.0))
            for e in range(1, 4):
                s.add(Metric(job_id=j.id, key="epoch/loss", step=e, value=1.0 / e, time=0.0))
                for key, v in (("R@1", 0.5 + 0.05 * e), ("R@2", 0.6 + 0.05 * e), ("MAP@R", 0.2 + 0.01 * e)):
                    s.add(Metric(job_id=j.id, key=key, step=e, value=v, time=0.0))
            s.add(Summary(job_id=j.id, key="R@1", best=0.65, best_step=3, last=0.65, last_step=3))
    return registry


def test_report_writes_run_and_overlay_pngs_and_index(curves_registry, tmp_path):
    out = write_report(curves_registry, tmp_path / "rep")
    assert out["runs"] == [1, 2]
    names = sorted(Path(f).name for f in out["files"])
    assert names == ["compare-cub.png", "index.md", "run-1.png", "run-2.png"]
    assert _png(tmp_path / "rep" / "run-1.png") == RUN_SIZE
    assert _png(tmp_path / "rep" / "compare-cub.png") == OVERLAY_SIZE
    index = (tmp_path / "rep" / "index.md").read_text()
    assert "| cub | hybrid | 256 | R@1 | 2 |" in index and "68.687" in index
    assert "sample_outputs/cub.o" in index and "![run-1](run-1.png)" in index
    assert not list((tmp_path / "rep").glob(".*tmp"))  # atomic writes leave no temp files


def test_paper_curve_is_the_reference_log(curves_registry):
    from ctxsim.report.plots import paper_curve

    pts, src = paper_curve(curves_registry, "cub", "hybrid", 256)
    assert [e for e, _ in pts] == list(range(5, 85, 5)) and pts[0][1] == pytest.approx(63.9)
    assert "sample_outputs/cub.o" in src and "epoch 5" not in src
    assert paper_curve(curves_registry, "cub", "triplet", 256) == ([], None)
    assert paper_curve(curves_registry, "cub", "hybrid", 224) == ([], None)


def test_cli_report_errors(curves_registry, tmp_path):
    r = CliRunner().invoke(app, ["report", "--out", str(tmp_path), "--db", curves_registry.url])
    assert r.exit_code == 2 and "give one job id or --all" in r.stderr
    r = CliRunner().invoke(app, ["report", "42", "--out", str(tmp_path), "--db", curves_registry.url])
    assert r.exit_code == 4 and "no such job: 42" in r.stderr
    r = CliRunner().invoke(app, ["report", "--all", "--dataset", "sop", "--out", str(tmp_path), "--db", curves_registry.url])
    assert r.exit_code == 4 and "no finished runs" in r.stderr


# --- a tiny real run ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """Two seeds of the synthetic recipe, queued and run in the foreground on CPU (a few seconds)."""
    import torch

    from ctxsim.registry import jobs
    from ctxsim.registry.db import open_registry
    from ctxsim.runner.job import run_job_foreground
    from ctxsim.train import recipe

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("real")
    reg = open_registry(tmp / "experiments.db")
    ids = []
    for seed in (0, 1):
        cfg = recipe("synthetic", "hybrid", 256).with_overrides(epochs=2, seed=seed, select="best", device="cpu")
        jid = jobs.enqueue(reg, cfg, executor="foreground", runs_root=tmp / "runs")
        run_job_foreground(reg, jid, device="cpu")
        ids.append(jid)
    yield reg, ids, tmp
    reg.dispose()


def test_real_run_report_pngs(real_runs):
    reg, ids, tmp = real_runs
    r = CliRunner().invoke(app, ["report", "--all", "--out", str(tmp / "rep"), "--json", "--db", reg.url])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["runs"] == ids
    for jid in ids:
        assert _png(tmp / "rep" / f"run-{jid}.png") == RUN_SIZE
    assert _png(tmp / "rep" / "compare-synthetic.png") == OVERLAY_SIZE
    one = CliRunner().invoke(app, ["report", str(ids[0]), "--out", str(tmp / "one"), "--db", reg.url])
    assert one.exit_code == 0 and _png(tmp / "one" / f"run-{ids[0]}.png") == RUN_SIZE


def test_real_run_compare_reads_the_selection(real_runs):
    reg, ids, _ = real_runs
    r = CliRunner().invoke(app, ["compare", "--json", "--metric", "R@1", "--db", reg.url])
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.stdout)
    assert row["run_ids"] == ids and row["seeds"] == [0, 1]
    assert row["test_selected"] == 2 and row["paper"] is None  # no paper number for synthetic data
    assert all(0.0 <= v <= 100.0 for v in row["finals"] + row["bests"])


def test_real_run_retrieval_grid(real_runs):
    reg, ids, tmp = real_runs
    from ctxsim.registry.queries import job_detail

    ckpt = Path(job_detail(reg, ids[0])["run_dir"]) / "checkpoint.pt"
    out = G.checkpoint_grid(ckpt, tmp / "grid.png", k=4, n_queries=3, tile=48)
    assert _png(tmp / "grid.png") == G.grid_size(3, 4, 48) == out["size"]
    assert len(out["queries"]) == 3 and 0.0 <= out["precision"] <= 1.0
    # the same queries again give the same picture (seeded choice)
    again = G.checkpoint_grid(ckpt, tmp / "grid2.png", k=4, n_queries=3, tile=48)
    assert again["queries"] == out["queries"] and again["hits"] == out["hits"]
