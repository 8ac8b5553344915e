"""The shared read queries: incremental metric series with per-key step axes."""

import time

from ctxsim.registry.models import Job, Metric
from ctxsim.registry.queries import job_detail, metric_series, runs_table


def _job_with_points(registry):
    with registry.begin() as s:
        j = Job(dataset="digits", loss="hybrid", resolution=None, config_json="{}", config_hash="h")
        s.add(j)
        s.flush()
        for st in range(1, 101):
            s.add(Metric(job_id=j.id, key="train/loss", step=st, value=1.0 / st, time=time.time()))
        for ep in (1, 2, 3):
            s.add(Metric(job_id=j.id, key="R@1", step=ep, value=0.1 * ep, time=time.time()))
        return j.id


def test_metric_series_since_step_is_per_key(registry):
    jid = _job_with_points(registry)
    full = metric_series(registry, jid)
    assert len(full["train/loss"]) == 100 and [p[0] for p in full["R@1"]] == [1, 2, 3]
    # train/loss counts global steps, R@1 counts epochs: a mixed since_step must not drop epoch 3
    new = metric_series(registry, jid, since_step={"train/loss": 90, "R@1": 2})
    assert [p[0] for p in new["R@1"]] == [3]
    assert [p[0] for p in new["train/loss"]] == list(range(91, 101))
    # a key the caller has never seen comes back whole
    new = metric_series(registry, jid, since_step={"train/loss": 100})
    assert "train/loss" not in new and len(new["R@1"]) == 3


def test_runs_table_and_detail(registry):
    jid = _job_with_points(registry)
    rows = runs_table(registry)
    assert [r["id"] for r in rows] == [jid] and rows[0]["status"] == "queued"
    assert job_detail(registry, jid)["config_json"] == "{}"
    assert job_detail(registry, jid + 1) is None
