"""The digits recipe's setting, on validation classes: does the quick start's first curve fall?

    python benchmarks/digits_study.py

For each candidate (the recipe, loss.k=16, loss.k=8, model.bn_mode=none) and seeds 0, 1, 2: one run
with 2 of the 5 training classes held out (val_classes=2, batches of 3 x 16) reporting the
validation MAP@R, and one full run as `ctxsim run -d digits -l hybrid` trains it, reporting the
training loss (mean of the first and the last fifth of steps), the similarity regulariser at the
end (about 0.53 is the collapse signature: mean cosine near 1) and test MAP@R on the unseen classes.
Two processes, one thread each. Prints one JSON line per run; nothing is asserted.
"""
import json
import statistics
from concurrent.futures import ProcessPoolExecutor

VARIANTS = {"recipe (k=4)": [], "k=16": ["loss.k=16"], "bn_mode=none": ["model.bn_mode=none"],
            "k=8": ["loss.k=8"]}
VAL = ["val_classes=2", "batch_size=48"]  # 3 training classes left: 3 x 16 per batch


def one(args):
    name, sets, seed, val = args
    import torch
    torch.set_num_threads(1)
    from ctxsim.train.configure import configure
    from ctxsim.train.engine import fit
    from ctxsim.train.events import ListSink
    cfg = configure("digits", "hybrid", 256, sets=(VAL if val else []) + sets, seed=seed, device="cpu")
    sink = ListSink()
    fit(cfg, sink=sink)
    ev = [e.data for e in sink.events if e.kind == "eval"]
    if val:
        m = [d["metrics"] for d in ev if d.get("split") == "val"][-1]
    else:
        m = [d["metrics"] for d in ev if d.get("split") != "val"][-1]
    steps = [e.data for e in sink.events if e.kind == "step"]
    losses = [float(d["loss"]) for d in steps]
    regs = [float(d.get("terms", {}).get("reg", float("nan"))) for d in steps]
    f = max(1, len(losses) // 5)
    return name, seed, val, m["MAP@R"], statistics.mean(losses[:f]), statistics.mean(losses[-f:]), statistics.mean(regs[-f:])


if __name__ == "__main__":
    jobs = [(n, s, seed, val) for n, s in VARIANTS.items() for seed in (0, 1, 2) for val in (True, False)]
    with ProcessPoolExecutor(2) as ex:
        for r in ex.map(one, jobs):
            name, seed, val, mapr, l0, l1, reg = r
            print(json.dumps({"variant": name, "seed": seed, "split": "val" if val else "test(full run)", "MAP@R": round(mapr, 4),
                              "loss": f"{l0:.3f}->{l1:.3f}", "reg_last": round(reg, 3)}), flush=True)
