"""The dashboard's tuning studies view (`T`): studies of `ctxsim tune` from the registry database."""

from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from sqlalchemy import inspect
from tui_helpers import settled, sync

from ctxsim.registry.db import read_registry

SIZE = (160, 40)


def _study(reg, name="fm-hybrid"):
    """A study as `ctxsim tune` leaves it: settings in user attrs, trials carrying their job ids."""
    from ctxsim.tuning.study import storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = storage(reg)
    study = optuna.create_study(study_name=name, storage=st, direction="maximize")
    for k, v in {"dataset": "fashion-mnist", "loss": "hybrid", "objective": "MAP@R"}.items():
        study.set_user_attr(k, v)
    dist = {"lr": FloatDistribution(1e-4, 2e-3, log=True)}
    for jid, (value, state) in enumerate([(0.70, TrialState.COMPLETE), (0.75, TrialState.COMPLETE),
                                          (None, TrialState.PRUNED), (None, TrialState.RUNNING)], start=2):
        study.add_trial(create_trial(params={"lr": 1e-4 * jid}, distributions=dist, value=value, state=state,
                                     user_attrs={"job_id": jid}))
    return study


def test_listing_reads_without_creating_optuna_tables(seeded):
    from ctxsim.tuning import StudyReader, list_studies

    ro = read_registry(seeded)
    reader = StudyReader(ro)
    try:
        assert list_studies(ro, counts=True) == [] and reader.studies() == [] and reader.studies() == []
        assert not inspect(seeded.engine).has_table("studies")  # a dashboard never adds Optuna's schema
        _study(seeded)  # a study appears while the reader polls
        assert [s["study"] for s in reader.studies()] == ["fm-hybrid"]
    finally:
        reader.close()
        ro.dispose()


def test_listing_counts_states_and_names_the_best_job(seeded):
    from ctxsim.tuning import list_studies

    _study(seeded)
    [s] = list_studies(read_registry(seeded), counts=True)
    assert s["study"] == "fm-hybrid" and s["best_value"] == 0.75 and s["best_job"] == 3
    assert s["states"]["complete"] == 2 and s["states"]["pruned"] == 1 and s["states"]["running"] == 1
    assert list(s["best_params"]) == ["lr"] and abs(s["best_params"]["lr"] - 3e-4) < 1e-12


@sync
async def test_studies_view_lists_best_so_far_and_opens_the_best_job(make_app, seeded):
    from ctxsim.tui.screens.detail import DetailScreen
    from ctxsim.tui.screens.runs import RunsScreen
    from ctxsim.tui.screens.studies import StudiesScreen
    from ctxsim.tui.widgets.studies_table import StudiesTable

    _study(seeded)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, RunsScreen)
        await pilot.press("T")
        scr = await settled(pilot, StudiesScreen)
        table = scr.query_one(StudiesTable)
        assert table.row_keys == ["fm-hybrid"]
        cells = [str(c) for c in table._cells["fm-hybrid"]]
        assert cells[:6] == ["fm-hybrid", "75.00 %", "2 done · 1 pruned · 1 running", "fashion-mnist/hybrid", "3",
                             "MAP@R"]
        assert cells[6] == "lr=0.0003"
        assert "1 study · 1 trial running" in scr.status.text
        await pilot.press("enter")
        det = await settled(pilot, DetailScreen)
        assert det.job_id == 3


@sync
async def test_studies_view_without_studies_says_how_to_start_one(make_app, seeded):
    from ctxsim.tui.screens.runs import RunsScreen
    from ctxsim.tui.screens.studies import StudiesScreen
    from ctxsim.tui.widgets.studies_table import StudiesTable

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, RunsScreen)
        await pilot.press("T")
        scr = await settled(pilot, StudiesScreen)
        assert scr.query_one(StudiesTable).row_keys == []
        assert "no tuning study yet: ctxsim tune" in scr.status.text
        await pilot.press("enter")  # nothing to open: no crash, still here
        await pilot.pause()
        assert isinstance(pilot.app.screen, StudiesScreen)
    assert not inspect(seeded.engine).has_table("studies")
