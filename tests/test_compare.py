"""`ctxsim compare` on a seeded registry: several seeds, config variants, missing paper numbers,
imported reference rows, test-set selection; every output format."""

from __future__ import annotations

import csv
import io
import json
import statistics

import pytest
from typer.testing import CliRunner

from ctxsim.baselines import import_baselines, parse_baselines
from ctxsim.cli.main import app
from ctxsim.registry.models import Job, JobEvent, Metric, Summary
from ctxsim.report.compare import NotFoundError, compare_rows
from ctxsim.report.render import MISSING, to_csv, to_markdown

# R@1 per evaluation (fractions, as runs store them), epochs 5, 10, 15
CUB_SEEDS = {0: [0.600, 0.680, 0.670], 1: [0.610, 0.690, 0.685], 2: [0.620, 0.700, 0.675]}


def _add_job(s, dataset, loss, res, seed, r1, status="done", extra_cfg=None, done=None, map_r=0.25, done_msg=""):
    cfg = {"dataset": dataset, "loss": loss, "resolution": res, "seed": seed, "lam": 0.4,
           "device": "cpu", "select": "last", **(extra_cfg or {})}
    j = Job(dataset=dataset, loss=loss, resolution=res, seed=seed, config_json=json.dumps(cfg),
            config_hash=f"h{seed}", status=status)
    s.add(j)
    s.flush()
    for i, v in enumerate(r1):
        s.add(Metric(job_id=j.id, key="R@1", step=5 * (i + 1), value=v, time=float(i)))
    best = max(r1)
    s.add(Summary(job_id=j.id, key="R@1", best=best, best_step=5 * (r1.index(best) + 1), last=r1[-1], last_step=5 * len(r1)))
    if map_r is not None:
        s.add(Summary(job_id=j.id, key="MAP@R", best=map_r, best_step=5, last=map_r, last_step=5))
    s.add(Summary(job_id=j.id, key="train/loss", best=0.1, best_step=9, last=0.2, last_step=10))
    if done is not None:  # the sink's done event: a human message and its data as the payload
        s.add(JobEvent(job_id=j.id, kind="done", message=done_msg, payload=done))
    return j.id


@pytest.fixture
def seeded(registry):
    """ids: cub hybrid 256 x3 seeds (seed 1 reported its test-selected best in its done event),
    a cub hybrid 256 lam=0.5 variant, cars contrastive 224, sop triplet 256 (no paper number),
    inat multisimilarity 256 (imported number, selected on val), a running cub job."""
    ids = {}
    with registry.begin() as s:
        ids["cub"] = [
            _add_job(s, "cub", "hybrid", 256, 0, CUB_SEEDS[0]),
            _add_job(s, "cub", "hybrid", 256, 1, CUB_SEEDS[1],
                     done={"metrics": {"R@1": 0.69, "MAP@R": 0.25}, "selected": "best", "selected_on": "test"}),
            _add_job(s, "cub", "hybrid", 256, 2, CUB_SEEDS[2]),
        ]
        ids["variant"] = _add_job(s, "cub", "hybrid", 256, 0, [0.5, 0.66], extra_cfg={"lam": 0.5})
        ids["cars"] = _add_job(s, "cars", "contrastive", 224, 0, [0.75, 0.80], map_r=None)
        ids["sop"] = _add_job(s, "sop", "triplet", 256, 0, [0.70, 0.75])
        ids["inat"] = _add_job(s, "inat", "multisimilarity", 256, 0, [0.40, 0.44],
                               done={"metrics": {"R@1": 0.43}, "selected": "best", "selected_on": "val"})
        ids["running"] = _add_job(s, "cub", "hybrid", 256, 3, [0.3], status="running")
    import_baselines(registry, parse_baselines(
        "resolution,dataset,method,metric,value,kind,source\n"
        "256,iNat,MS,R@1,41.5,paper_table,PMLR pdf Table 4 (transcribed)\n"
    ))
    return registry, ids


def _row(rows, **kw):
    found = [r for r in rows if all(r[k] == v for k, v in kw.items())]
    assert len(found) == 1, (kw, found)
    return found[0]


def test_rows_pool_seeds_and_compare_with_the_reference_log(seeded):
    reg, ids = seeded
    rows = compare_rows(reg)
    r = _row(rows, dataset="cub", variant="lam=0.4", metric="R@1")
    assert r["run_ids"] == ids["cub"] and r["seeds"] == [0, 1, 2] and r["n"] == 3
    # seed 1 reported its selected best (0.69); the others their last evaluation
    finals = [67.0, 69.0, 67.5]
    bests = [68.0, 69.0, 70.0]
    assert r["final_mean"] == pytest.approx(statistics.fmean(finals))
    assert r["final_std"] == pytest.approx(statistics.stdev(finals))
    assert r["best_mean"] == pytest.approx(statistics.fmean(bests))
    assert (r["paper"], r["paper_kind"], r["paper_origin"]) == (68.687, "reference_log", "shipped")
    assert "sample_outputs/cub.o" in r["paper_source"]
    assert r["delta"] == pytest.approx(statistics.fmean(finals) - 68.687)
    assert r["paper_best"] == 68.974 and r["delta_best"] == pytest.approx(statistics.fmean(bests) - 68.974)
    assert r["test_selected"] == 1
    # the running job is not pooled; the lam=0.5 run is its own row
    assert ids["running"] not in r["run_ids"]
    v = _row(rows, dataset="cub", variant="lam=0.5", metric="R@1")
    assert v["run_ids"] == [ids["variant"]] and v["final_std"] is None


def test_missing_and_imported_reference_numbers(seeded):
    reg, ids = seeded
    rows = compare_rows(reg)
    sop = _row(rows, dataset="sop", metric="R@1")
    assert sop["paper"] is None and sop["delta"] is None
    mapr = _row(rows, dataset="cub", variant="lam=0.4", metric="MAP@R")
    assert mapr["paper"] is None and mapr["final_mean"] == pytest.approx(25.0)
    inat = _row(rows, dataset="inat", metric="R@1")
    assert (inat["paper"], inat["paper_kind"], inat["paper_origin"]) == (41.5, "paper_table", "imported")
    assert inat["final_mean"] == pytest.approx(43.0) and inat["delta"] == pytest.approx(1.5)
    assert inat["test_selected"] == 0  # selected on a validation split: not flagged
    cars = _row(rows, dataset="cars", metric="R@1")
    assert cars["paper"] == 79.5 and cars["paper_kind"] == "figure_read_approx"
    assert not [r for r in rows if r["dataset"] == "cars" and r["metric"] == "MAP@R"]


def test_a_paper_table_number_takes_precedence_over_a_log(seeded):
    reg, _ = seeded
    import_baselines(reg, parse_baselines(
        "resolution,dataset,method,metric,value,kind,source\n"
        "256,cub,Contextual(Hybrid),R@1,70.1,paper_table,PMLR pdf Table 4\n"
    ))
    r = _row(compare_rows(reg, dataset="cub", metrics=["R@1"]), variant="lam=0.4")
    assert (r["paper"], r["paper_kind"]) == (70.1, "paper_table")


def test_filters_ids_and_missing_ids(seeded):
    reg, ids = seeded
    rows = compare_rows(reg, ids=[ids["cub"][0], ids["running"]], metrics=["R@1"])
    assert len(rows) == 1 and rows[0]["run_ids"] == [ids["cub"][0], ids["running"]]
    assert {r["dataset"] for r in compare_rows(reg, loss="triplet")} == {"sop"}
    assert {r["resolution"] for r in compare_rows(reg, resolution=224)} == {224}
    with pytest.raises(NotFoundError, match="999"):
        compare_rows(reg, ids=[999])


def test_selection_from_the_sinks_own_done_message(registry):
    """The real RegistrySink stores the done event: compare takes the reported (selected) metric from
    it, not the last evaluation, and flags the test-set selection (done event or config select=best)."""
    from ctxsim.registry.sink import RegistrySink
    from ctxsim.train.events import Event

    with registry.begin() as s:
        jid = _add_job(s, "cars", "hybrid", 256, 0, [0.85, 0.8], extra_cfg={"select": "best"})
    sink = RegistrySink(registry, jid)
    sink.emit(Event("done", {"metrics": {"R@1": 0.85}, "selected": "best", "best_epoch": 10, "selected_on": "test"}))
    sink.close()
    (r,) = compare_rows(registry, metrics=["R@1"])
    assert r["test_selected"] == 1 and r["final_mean"] == pytest.approx(85.0)  # last eval was 80
    assert r["best_mean"] == pytest.approx(85.0)


def test_done_rows_without_payload_are_unknown_and_never_parsed(registry, tmp_path):
    """A done event written before events had payloads (schema v2) carries only its message: compare
    does not parse it (its numbers are rounded) and reads no run folder; the selection comes from the
    config and the final value from the last evaluation."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "events.jsonl").write_text(json.dumps({"kind": "done", "time": 0.0, "metrics": {"R@1": 0.99}}) + "\n")
    with registry.begin() as s:
        old = _add_job(s, "cars", "hybrid", 256, 0, [0.85, 0.8], extra_cfg={"select": "last"},
                       done_msg="R@1=0.9900 selected=best selected_on=test")
        s.add(JobEvent(job_id=old, kind="done", message="R@1=0.9900 selected=best selected_on=test"))
        s.get(Job, old).run_dir = str(run_dir)
    (r,) = compare_rows(registry, metrics=["R@1"])
    assert r["test_selected"] == 0 and r["final_mean"] == pytest.approx(80.0)


# --- output formats through the CLI ------------------------------------------------------------


def _cli(reg, *args):
    r = CliRunner().invoke(app, ["compare", *args, "--db", reg.url])
    assert r.exit_code == 0, r.output
    return r


def test_format_json(seeded):
    reg, ids = seeded
    out = json.loads(_cli(reg, "--format", "json").stdout)
    assert out == json.loads(_cli(reg, "--json").stdout)
    r = _row(out, dataset="cub", variant="lam=0.4", metric="R@1")
    assert r["paper"] == 68.687 and r["seeds"] == [0, 1, 2] and r["finals"] == pytest.approx([67.0, 69.0, 67.5])


def test_format_csv(seeded):
    reg, _ = seeded
    text = _cli(reg, "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(compare_rows(reg))
    cub = [r for r in rows if r["dataset"] == "cub" and r["variant"] == "lam=0.4" and r["metric"] == "R@1"][0]
    assert cub["run_ids"].split() and cub["seeds"] == "0 1 2" and float(cub["paper"]) == 68.687
    assert float(cub["delta"]) == pytest.approx(statistics.fmean([67.0, 69.0, 67.5]) - 68.687, abs=1e-5)
    sop = [r for r in rows if r["dataset"] == "sop" and r["metric"] == "R@1"][0]
    assert sop["paper"] == "" and sop["delta"] == "" and sop["paper_source"] == ""
    assert text == to_csv(compare_rows(reg))


def test_format_markdown_pastes_as_a_table(seeded):
    reg, _ = seeded
    md = _cli(reg, "--format", "markdown").stdout
    assert md == to_markdown(compare_rows(reg))
    lines = md.splitlines()
    table = [l for l in lines if l.startswith("|")]
    n_cols = table[0].count("|")
    assert all(l.count("|") - l.count("\\|") == n_cols for l in table)
    assert set(table[1].replace("|", "").replace("-", "").replace(":", "")) == set()
    assert len(table) == 2 + len(compare_rows(reg))
    sop = [l for l in table if l.startswith("| sop | triplet | 256 |") and "| R@1 |" in l][0]
    assert f"| {MISSING} | {MISSING} |" in sop  # no paper number, no delta
    cub = [l for l in table if l.startswith("| cub | hybrid | 256 | lam=0.4 | R@1 |")][0]
    # these hand-made configs are not the recipe: Δ is n/c with a footnote naming the deviations
    assert "68.687" in cub and "67.83 ± 1.04 †" in cub and "n/c (a)" in cub and "-0.85" not in cub
    notes = "\n".join(l for l in lines if not l.startswith("|"))
    assert "(a) " in notes and "no data fingerprint recorded" in notes
    assert "sample_outputs/cub.o" in notes and "PMLR pdf Table 4 (transcribed)" in notes
    assert "† the reported model was selected on the test set" in notes


def test_format_table(seeded):
    reg, _ = seeded
    out = _cli(reg).stdout
    assert "cub hybrid 256" in out and "67.83 ± 1.04 †" in out and "68.687" in out
    assert "sop triplet 256" in out and MISSING in out and "paper_table" in out
    assert "[1] reference implementation sample_outputs/cub.o" in out


def test_cli_errors_and_empty(seeded, tmp_path):
    reg, _ = seeded
    r = CliRunner().invoke(app, ["compare", "999", "--db", reg.url])
    assert r.exit_code == 4 and "no such job: 999" in r.stderr
    r = CliRunner().invoke(app, ["compare", "--dataset", "imagenet", "--db", reg.url])
    assert r.exit_code == 2 and "unknown dataset" in r.stderr
    r = CliRunner().invoke(app, ["compare", "--loss", "arcface", "--db", reg.url])
    assert r.exit_code == 2 and "unknown loss" in r.stderr
    assert json.loads(_cli(reg, "--loss", "Triplet", "--json").stdout)[0]["dataset"] == "sop"
    r = CliRunner().invoke(app, ["compare", "--status", "finished", "--db", reg.url])
    assert r.exit_code == 2 and "unknown status" in r.stderr
    # a read command never creates a registry: a missing file is one line and exit 3, nothing written
    r = CliRunner().invoke(app, ["compare", "--json", "--db", str(tmp_path / "empty.db")])
    assert r.exit_code == 3 and "no registry at" in r.stderr and not (tmp_path / "empty.db").exists()
    # --status running brings in the running job only
    out = json.loads(_cli(reg, "--status", "running", "--json").stdout)
    assert [r["n"] for r in out] == [1, 1]
