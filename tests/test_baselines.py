"""Stored reference numbers: shipped CSV, validation, first-use loading, import, `ctxsim baselines`."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from ctxsim.baselines import (
    KINDS,
    ensure_baselines,
    import_baselines,
    list_baselines,
    load_shipped,
    loss_for_method,
    method_matches,
    normalize_dataset,
    parse_baselines,
    read_baseline_file,
)
from ctxsim.cli.main import app
from ctxsim.errors import DataError
from ctxsim.registry.models import Baseline, Meta

HEADER = "resolution,dataset,method,metric,value,kind,source\n"


def _count(reg, **where) -> int:
    q = select(func.count()).select_from(Baseline)
    for k, v in where.items():
        q = q.where(getattr(Baseline, k) == v)
    with reg.Session() as s:
        return s.scalar(q)


def test_shipped_file_is_valid_and_complete():
    rows = load_shipped()
    # every data line of the shipped file becomes a row (no silent drop)
    from ctxsim.baselines.store import shipped_text

    n_lines = sum(1 for line in shipped_text().splitlines()[1:] if line.strip())
    assert len(rows) == n_lines
    assert {r.kind for r in rows} <= set(KINDS)
    assert all(0 <= r.value <= 100 and r.source for r in rows)
    cub256 = {r.metric: r.value for r in rows if (r.dataset, r.method, r.resolution, r.kind) == ("cub", "Hybrid", 256, "reference_log")}
    assert cub256["R@1"] == pytest.approx(68.687)


def test_names_map_losses_and_datasets():
    assert loss_for_method("Hybrid") == "hybrid"
    assert loss_for_method("Contextual(Hybrid)") == "hybrid"
    assert loss_for_method("MS+miner") == "ms_miner"
    assert loss_for_method("Proxy_Anchor") == "proxy_anchor"
    assert loss_for_method("Proxy_NCA") == "proxy_nca"
    assert loss_for_method("MS") == "multisimilarity"
    # other papers' numbers and ablation points are not this loss's reference
    assert loss_for_method("Proxy-Anchor (ResNet-50/512)") is None
    assert loss_for_method("Hybrid(ctx_weight=0.9)") is None
    assert method_matches("MS+miner", "ms_miner") and not method_matches("MS", "ms_miner")
    assert normalize_dataset("CUB") == "cub" and normalize_dataset("InShop") == "inshop"
    assert normalize_dataset("Cars196") == "cars" and normalize_dataset("imagenet") is None


def test_first_use_loads_once_and_reloads_when_shipped_file_changes(registry):
    n = len(load_shipped())
    assert ensure_baselines(registry) == n
    assert ensure_baselines(registry) == 0
    assert _count(registry) == n
    import_baselines(registry, parse_baselines(HEADER + "256,sop,Triplet,R@1,70.5,user,my run\n"))
    # a newer ctxsim ships a different file: shipped rows are replaced, imported ones kept
    with registry.begin() as s:
        s.get(Meta, "baselines_shipped_sha").value = "older"
    assert ensure_baselines(registry) == n
    assert _count(registry, origin="shipped") == n
    assert _count(registry, origin="imported") == 1


@pytest.mark.parametrize(
    "line, why",
    [
        ("256,cub,Hybrid,R@1,abc,user,x", "not a number"),
        ("256,cub,Hybrid,R@1,68.5x,user,x", "not a number"),
        ("256,cub,Hybrid,R@1,0.698,user,x", "looks like a fraction; values are percentages (write 69.8"),
        ("256,cub,Hybrid,R@1,69.8,user,x", None),
        ("300,cub,Hybrid,R@1,50,user,x", "resolution 300 is not one of the paper's (224, 256"),
        ("256,cub,Hybrid,R@9,50,user,x", "unknown metric 'R@9'"),
        ("256,cub,Hybrid,bogusmetric,50,user,x", "unknown metric 'bogusmetric'"),
        (",cub,Hybrid,MAP@R,50,user,x", None),
        ("256,sop,Hybrid,R@1000,50,user,x", None),
        ("224,cars,Hybrid,R@1,91.2,paper_table,x", "a second number for cars/224/Hybrid/R@1 (paper_table) (91.2; line 2 has 91.1)"),
        ("224,cars,Hybrid,R@1,91.1,paper_table,again", "SAME"),  # the same number twice: kept once
        ("256,cub,Hybrid,R@1,101,user,x", "outside 0..100"),
        ("256,cub,Hybrid,R@1,-1,user,x", "outside 0..100"),
        ("256,cub,Hybrid,R@1,nan,user,x", "outside 0..100"),
        ("256,imagenet,Hybrid,R@1,50,user,x", "unknown dataset"),
        ("256,cub,Hybrid,R@1,50,guess,x", "kind 'guess'"),
        ("256,cub,Hybrid,R@1,50,user,", "source is empty"),
        ("2x6,cub,Hybrid,R@1,50,user,x", "resolution"),
        ("256,cub,,R@1,50,user,x", "method"),
        ("256,cub,Hybrid,R @1,50,user,x", "metric"),
        ("256,cub,Hybrid,R@1,50,reference_log_curve,x", "R@1@epoch5"),
        ("256,cub,Hybrid,R@1,50,user", "6 fields, expected 7"),
    ],
)
def test_validation_names_the_line(line, why):
    text = HEADER + "224,cars,Hybrid,R@1,91.1,paper_table,PMLR pdf Table 2\n" + line + "\n"
    if why is None:
        assert len(parse_baselines(text)) == 2
        return
    if why == "SAME":
        assert len(parse_baselines(text)) == 1
        return
    with pytest.raises(DataError) as e:
        parse_baselines(text, "mine.csv")
    msg = str(e.value)
    assert msg.startswith("mine.csv: line 3: ") and why in msg and "\n" not in msg


def test_validation_reports_several_bad_rows_and_quoted_multiline_fields():
    text = HEADER + '256,cub,Hybrid,R@1,50,user,"two\nlines"\n' + "256,cub,Hybrid,R@1,x,user,s\n" * 5
    with pytest.raises(DataError) as e:
        parse_baselines(text)
    msg = str(e.value)
    # the quoted source spans lines 2-3, so the first bad row is on line 4
    assert "line 4:" in msg and "line 5:" in msg and "(and 2 more bad rows)" in msg


def test_bad_header_and_empty_file():
    with pytest.raises(DataError, match="missing kind"):
        parse_baselines("resolution,dataset,method,metric,value,source\n")
    with pytest.raises(DataError, match="unknown 'note'"):
        parse_baselines(HEADER.strip() + ",note\n")
    with pytest.raises(DataError, match="empty file"):
        parse_baselines("")
    with pytest.raises(DataError, match="no rows"):
        parse_baselines(HEADER)


def test_dataset_spellings_are_normalised_on_import(tmp_path):
    p = tmp_path / "b.csv"
    p.write_text("\ufeff" + HEADER + ",InShop,Hybrid,R@1,90,paper_table,PMLR Table 4\n", encoding="utf-8")
    (row,) = read_baseline_file(p)
    assert row.dataset == "inshop" and row.resolution is None and row.origin == "imported"
    with pytest.raises(DataError, match="no such file"):
        read_baseline_file(tmp_path / "absent.csv")


# --- CLI ---------------------------------------------------------------------------------------


def _run(args, db):
    return CliRunner().invoke(app, [*args, "--db", str(db)])


def test_cli_lists_with_filters_as_json_and_table(tmp_path):
    db = tmp_path / "r.db"
    r = _run(["baselines", "--dataset", "cub", "--resolution", "224", "--method", "ms_miner", "--json"], db)
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [(x["method"], x["value"], x["kind"], x["loss"]) for x in rows] == [("MS+miner", 68.3, "figure_read_approx", "ms_miner")]
    # learning-curve rows are hidden unless asked for
    plain = json.loads(_run(["baselines", "-d", "cub", "-r", "256", "-m", "hybrid", "--json"], db).stdout)
    curves = json.loads(_run(["baselines", "-d", "cub", "-r", "256", "-m", "hybrid", "--curves", "--json"], db).stdout)
    assert not any(x["kind"] == "reference_log_curve" for x in plain)
    assert sum(x["kind"] == "reference_log_curve" for x in curves) == 16
    t = _run(["baselines", "--dataset", "cars", "--resolution", "224"], db)
    assert t.exit_code == 0 and "MS+miner" in t.stdout and "figure_read_approx" in t.stdout


def test_cli_import_good_then_bad_is_all_or_nothing(tmp_path, registry):
    db = registry.url
    good = tmp_path / "good.csv"
    good.write_text(HEADER + "256,inat,MS,R@1,41.2,paper_table,PMLR pdf Table 4\n"
                    "256,inat,MS,R@4,60.0,paper_table,PMLR pdf Table 4\n")
    r = _run(["baselines", "--import", str(good), "--json"], db)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"file": str(good), "added": 2, "skipped": 0}
    again = json.loads(_run(["baselines", "--import", str(good), "--json"], db).stdout)
    assert again["added"] == 0 and again["skipped"] == 2
    before = _count(registry)
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "256,inat,MS,R@8,70.0,paper_table,ok\n256,inat,MS,R@16,seventy,paper_table,bad\n")
    r = _run(["baselines", "--import", str(bad)], db)
    assert r.exit_code == 2
    assert "line 3" in r.stderr and "nothing imported" in r.stderr and "Traceback" not in r.output
    assert _count(registry) == before
    listed = json.loads(_run(["baselines", "-d", "inat", "-m", "multisimilarity", "--json"], db).stdout)
    assert {(x["metric"], x["origin"]) for x in listed} == {("R@1", "imported"), ("R@4", "imported")}


def test_cli_bad_input_is_one_line(tmp_path):
    db = tmp_path / "r.db"
    r = _run(["baselines", "--dataset", "imagenet"], db)
    assert r.exit_code == 2 and "unknown dataset" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _run(["baselines", "--kind", "guess"], db)
    assert r.exit_code == 2 and "unknown kind" in r.stderr


# --- first use by several processes at once ---------------------------------------------------


def _race(url: str, n: int = 4) -> list[int]:
    """``n`` threads, each with its own engine, load the shipped numbers at the same moment."""
    import threading

    from ctxsim.registry.db import open_registry

    regs = [open_registry(url) for _ in range(n)]
    barrier = threading.Barrier(n)
    loaded: list[int] = []
    errors: list[BaseException] = []

    def go(reg):
        barrier.wait()
        try:
            loaded.append(ensure_baselines(reg))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=go, args=(r,)) for r in regs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for r in regs:
        r.dispose()
    assert not errors, errors
    return loaded


def test_concurrent_first_use_sqlite(tmp_path):
    from ctxsim.registry.db import open_registry

    url = str(tmp_path / "race.db")
    loaded = _race(url)
    n = len(load_shipped())
    assert sorted(loaded) == [0, 0, 0, n]
    reg = open_registry(url)
    assert _count(reg) == n
    reg.dispose()


@pytest.mark.postgres
def test_concurrent_first_use_and_listing_postgres(pg_url):
    from registry_helpers import pg_schema_url

    from ctxsim.registry.db import open_registry

    with pg_schema_url(pg_url) as url:
        open_registry(url).dispose()  # schema first, so that only the baseline load races
        loaded = _race(url)
        n = len(load_shipped())
        assert sorted(loaded) == [0, 0, 0, n]
        reg = open_registry(url)
        assert _count(reg) == n
        added, _ = import_baselines(reg, parse_baselines(HEADER + "224,sop,Hybrid,R@1,81.0,paper_table,PMLR pdf\n"))
        assert added == 1
        rows = list_baselines(reg, dataset="sop", resolution=224, method="hybrid")
        assert [(r["value"], r["origin"]) for r in rows] == [(81.0, "imported")]
        reg.dispose()


def test_import_refuses_a_second_number_for_a_stored_cell_unless_replace(tmp_path):
    db = tmp_path / "e.db"
    first = tmp_path / "a.csv"
    first.write_text(HEADER + "224,cub,Hybrid,R@1,70.1,paper_table,PMLR Table 2\n")
    assert _run(["baselines", "--import", str(first)], db).exit_code == 0
    second = tmp_path / "b.csv"
    second.write_text(HEADER + "224,cub,Hybrid,R@2,80.0,paper_table,PMLR Table 2\n"
                      "224,cub,Hybrid,R@1,70.2,paper_table,PMLR Table 2 again\n")
    r = _run(["baselines", "--import", str(second)], db)
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "line 3: cub/224/Hybrid/R@1 (paper_table) already has 70.1 (imported)" in r.stderr
    assert "--replace" in r.stderr
    rows = json.loads(_run(["baselines", "-d", "cub", "-r", "224", "--json"], db).stdout)
    cell = [x["value"] for x in rows if x["method"] == "Hybrid" and x["metric"] == "R@1" and x["kind"] == "paper_table"]
    assert cell == [70.1] and not [x for x in rows if x["metric"] == "R@2" and x["origin"] == "imported"]  # nothing stored
    r = _run(["baselines", "--import", str(second), "--replace", "--json"], db)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["added"] == 2
    rows = json.loads(_run(["baselines", "-d", "cub", "-r", "224", "--json"], db).stdout)
    cell = [x["value"] for x in rows if x["method"] == "Hybrid" and x["metric"] == "R@1" and x["kind"] == "paper_table"]
    assert cell == [70.2]
    # a shipped number is never replaced, even with --replace
    shipped = [x for x in rows if x["origin"] == "shipped"][0]
    third = tmp_path / "c.csv"
    third.write_text(HEADER + f"{shipped['resolution'] or ''},{shipped['dataset']},{shipped['method']},"
                     f"{shipped['metric']},{min(99.0, shipped['value'] + 1)},{shipped['kind']},mine\n")
    r = _run(["baselines", "--import", str(third), "--replace"], db)
    assert r.exit_code == 2 and "shipped number is never replaced" in r.stderr
