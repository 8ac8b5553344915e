from ctxsim.train.events import Event, JsonlSink, ListSink, metric_points, read_events


def test_metric_points_from_events():
    e = Event("step", {"epoch": 1, "step": 7, "loss": 0.5, "terms": {"ctx": 0.1}, "lr": 1e-4, "images_per_s": 10.0})
    pts = metric_points(e)
    assert ("train/loss", 7, 0.5) in pts and ("train/ctx", 7, 0.1) in pts and ("train/lr", 7, 1e-4) in pts
    ev = Event("eval", {"epoch": 3, "metrics": {"R@1": 0.7, "MAP@R": 0.3}})
    assert sorted(metric_points(ev)) == [("MAP@R", 3, 0.3), ("R@1", 3, 0.7)]
    assert metric_points(Event("checkpoint", {"epoch": 1, "path": "x"})) == []


def test_jsonl_roundtrip_ignores_torn_line(tmp_path):
    p = tmp_path / "events.jsonl"
    sink = JsonlSink(p)
    sink.emit(Event("log", {"message": "hi"}))
    sink.emit(Event("epoch", {"epoch": 1, "loss": 0.25, "seconds": 1.0}))
    sink.close()
    with open(p, "a") as fh:
        fh.write('{"kind": "step", "ste')
    evs = read_events(p)
    assert [e.kind for e in evs] == ["log", "epoch"]
    assert evs[1].data["loss"] == 0.25
    ls = ListSink()
    for e in evs:
        ls.emit(e)
    assert len(ls.of("epoch")) == 1
