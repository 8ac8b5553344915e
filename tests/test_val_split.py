"""The class-disjoint validation split (config key ``val_classes``, ctxsim.data.val_split): its classes
are disjoint from training and the same every time, count and fraction forms, bad values as one-line
ConfigErrors, and selection on validation with the test split evaluated once, at the end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ctxsim.train.trainer as trainer_mod
from ctxsim.data.val_split import VAL_RULE, split_validation, val_class_count, val_class_ids
from ctxsim.errors import ConfigError
from ctxsim.train import recipe
from ctxsim.train.build import build_run_data
from ctxsim.train.engine import fit
from ctxsim.train.events import ListSink, metric_points

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_thread")]


def synthetic(**over):
    """8 training classes x 8 images, 4 test classes; batches of 4 classes x 4."""
    base = dict(device="cpu", num_workers=0, batch_size=16, epochs=3, eval_every=1,
                data_kw=dict(num_classes=8, images_per_class=8, test_classes=4, image_size=16))
    base.update(over)
    return recipe("synthetic", "contrastive", 256).with_overrides(**base)


def test_validation_classes_are_the_last_training_classes_disjoint_and_deterministic():
    data = build_run_data(synthetic(val_classes=3))
    assert data.val is not None and data.info["val_rule"] == VAL_RULE
    train_classes = set(np.unique(data.train_labels).tolist())
    val_classes = set(np.unique(data.val.query.labels).tolist())
    assert train_classes == {0, 1, 2, 3, 4} and val_classes == {5, 6, 7}
    assert train_classes.isdisjoint(val_classes)
    # the datasets yield what the labels say, and the validation images use the evaluation transform
    assert {int(data.train[i][1]) for i in range(len(data.train))} == train_classes
    assert {int(data.val.query[i][1]) for i in range(len(data.val.query))} == val_classes
    assert data.val.query.transform is data.query.transform
    assert len(data.train) + len(data.val.query) == 64 and data.num_classes == 5
    again = build_run_data(synthetic(val_classes=3, seed=7))  # the rule ignores the seed
    assert np.array_equal(again.train_labels, data.train_labels)
    assert np.array_equal(again.val.query.indices, data.val.query.indices)


def test_count_and_fraction_forms_and_off():
    labels = np.repeat(np.arange(10), 3)
    assert val_class_ids(labels, 2) == [8, 9]
    assert val_class_ids(labels, 0.3) == [7, 8, 9]
    assert val_class_ids(labels, 0.25) == [7, 8, 9]  # round(2.5) half up: 3
    assert val_class_ids(labels, 0) == [] and val_class_ids(labels, None) == []
    assert val_class_count(0.4, 5) == 2 and val_class_count(2.0, 5) == 2
    data = build_run_data(synthetic())
    assert data.val is None and split_validation(data, 0) is data
    assert synthetic(val_classes=0.25).val_classes == 0.25
    assert synthetic().with_sets(["val_classes=2"]).val_classes == 2


@pytest.mark.parametrize("value, words", [
    (-1, "must be >= 0"), (2.5, "neither a whole class count"), (float("nan"), "class count"),
])
def test_bad_values_are_one_line_config_errors(value, words):
    with pytest.raises(ConfigError, match=words) as e:
        synthetic(val_classes=value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("value, words", [(1, "at least 2 classes"), (0.1, "at least 2 classes"),
                                          (7, "leaves 1 for training"), (0.9, "leaves 1 for training")])
def test_counts_the_dataset_cannot_give_are_config_errors(value, words):
    with pytest.raises(ConfigError, match=words) as e:
        build_run_data(synthetic(val_classes=value))
    assert "\n" not in str(e.value)


def test_set_rejects_words():
    with pytest.raises(ConfigError, match="val_classes expects a number"):
        synthetic().with_sets(["val_classes=two"])


class _Spy:
    """Counts evaluations per split: the validation bundle says so in its info."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def __call__(self, model, data, *a, **kw):
        self.calls.append("val" if data.info.get("split") == "val" else "test")
        return self.real(model, data, *a, **kw)


@pytest.mark.parametrize("select", ["best", "last"])
def test_selection_on_validation_and_one_test_evaluation_at_the_end(monkeypatch, tmp_path, select):
    spy = _Spy(trainer_mod.evaluate_model)
    monkeypatch.setattr(trainer_mod, "evaluate_model", spy)
    sink = ListSink()
    res = fit(synthetic(val_classes=2, select=select, select_metric="MAP@R"), sink=sink, run_dir=tmp_path)
    assert spy.calls == ["val", "val", "val", "test"]  # no test evaluation before the end
    evals = [e.data for e in sink.events if e.kind == "eval"]
    assert [d["split"] for d in evals] == ["val", "val", "val", "test"]
    val_maps = [d["metrics"]["MAP@R"] for d in evals[:3]]
    done = next(e.data for e in sink.events if e.kind == "done")
    if select == "best":
        assert res.selected_on == "val" and done["selected_on"] == "val"
        assert res.best_epoch == 1 + int(np.argmax(val_maps))
    else:
        assert res.selected_on is None and res.best_epoch == 3
    assert evals[-1]["epoch"] == res.best_epoch
    assert res.metrics == evals[-1]["metrics"] == done["metrics"]  # the result is the one test evaluation
    # registry keys: validation points under val/, the test point under its own names
    keys = {k for e in sink.events if e.kind == "eval" for k, _, _ in metric_points(e)}
    assert {"val/MAP@R", "MAP@R"} <= keys
    fp = next(e.data for e in sink.events if e.kind == "start")["fingerprint"]
    assert fp["val_classes"] == 2 and fp["splits"]["val"]["held_out_labels"] == [6, 7]
    assert fp["splits"]["train"]["classes"] == 6 and fp["splits"]["val"]["rule"] == VAL_RULE


def test_selected_model_is_the_one_tested(monkeypatch):
    """select=best: the test evaluation sees the weights of the best validation epoch, and the
    trainer's own weights are restored after it."""
    seen = []
    real = trainer_mod.evaluate_model

    def spy(model, data, *a, **kw):
        seen.append((data.info.get("split"), {k: v.clone() for k, v in model.state_dict().items()}))
        return real(model, data, *a, **kw)

    monkeypatch.setattr(trainer_mod, "evaluate_model", spy)
    captured = {}
    orig_result = trainer_mod.Trainer.result

    def result(self, status, ck):
        captured["final"] = {k: v.clone() for k, v in self.model.state_dict().items()}
        captured["best"] = self.best_model
        return orig_result(self, status, ck)

    monkeypatch.setattr(trainer_mod.Trainer, "result", result)
    res = fit(synthetic(val_classes=2, select="best", select_metric="MAP@R", lr=1e-2))
    tested = seen[-1][1]
    assert seen[-1][0] is None or seen[-1][0] != "val"
    best_weights = seen[res.best_epoch - 1][1]
    assert all(torch.equal(tested[k], best_weights[k]) for k in tested)
    assert all(torch.equal(captured["final"][k], seen[2][1][k]) for k in tested)  # last epoch's weights kept


def test_without_validation_select_best_stays_on_test(monkeypatch):
    spy = _Spy(trainer_mod.evaluate_model)
    monkeypatch.setattr(trainer_mod, "evaluate_model", spy)
    res = fit(synthetic(select="best", epochs=2))
    assert spy.calls == ["test", "test"] and res.selected_on == "test"


def test_compare_marks_only_test_selection():
    from ctxsim.report.compare import selected_on_test

    assert selected_on_test({"selected": "best", "selected_on": "test"})
    assert not selected_on_test({"selected": "best", "selected_on": "val"})
    assert selected_on_test(None, {"select": '"best"', "val_classes": "null"})
    assert not selected_on_test(None, {"select": '"best"', "val_classes": "2.0"})
