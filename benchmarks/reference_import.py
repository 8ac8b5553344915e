"""Reading a reference model file: ctxsim's restricted reader vs plain ``torch.load``.

Writes a file in the reference main.py format (``torch.save((CUB_Network, loss_list, scaler))``,
real torchvision ResNet-50 with random weights, module ``networks`` defined here), then times in
fresh subprocesses, one core each (``torch.set_num_threads(1)``):

- ``torch.load(weights_only=False)``: what the reference does (needs its code importable; runs any
  pickle, so only ever on a file you made yourself, as here);
- ``restricted_load``: ctxsim's allow-listed reader (stand-ins + tensors, no code from the file);
- ``import_reference``: reader + conversion to a ctxsim model + self-check forward + atomic save.

Prints seconds (median of repeats) and peak RSS of each child, and the ratio to torch.load.
Never asserts anything about time.

    python benchmarks/reference_import.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import types
from pathlib import Path

NETWORKS_SRC = '''
import torch.nn as nn, torchvision
class CUB_Network(nn.Module):
    def __init__(self, embedding_size=512):
        super().__init__()
        self.backbone = torchvision.models.resnet50(weights=None)
        self.backbone.avgpool = nn.AdaptiveMaxPool2d((1, 1))
        self.backbone.fc = nn.Identity()
        self.standardize = nn.LayerNorm(2048, elementwise_affine=False)
        self.remap = nn.Linear(2048, embedding_size, bias=True)
'''


def _networks_module() -> types.ModuleType:
    mod = types.ModuleType("networks")
    exec(NETWORKS_SRC, mod.__dict__)  # our own class definition, standing in for the reference's file
    mod.CUB_Network.__module__ = "networks"
    return mod


def make_file(folder: Path) -> Path:
    import warnings

    import torch

    sys.modules["networks"] = _networks_module()
    torch.manual_seed(0)
    module = sys.modules["networks"].CUB_Network()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scaler = torch.cuda.amp.GradScaler()
    path = folder / "CUB_hybrid_lam_0.4_gamma_0.1_bench.pt"
    torch.save((module, [0.1] * 1200, scaler), path)  # 1200 losses: 80 epochs x 15 CUB batches
    return path


def one(mode: str, path: str) -> None:
    """Child process: time one way of reading the file; print {"s": seconds, "rss_mb": peak}."""
    import resource
    import time

    import torch

    torch.set_num_threads(1)
    if mode == "torch.load":
        sys.modules["networks"] = _networks_module()
        t = time.perf_counter()
        obj = torch.load(path, map_location="cpu", weights_only=False)
        n = len(obj[0].state_dict())
    elif mode == "restricted_load":
        from ctxsim.reference.import_reference import read_reference

        t = time.perf_counter()
        n = len(read_reference(path).state_dict)
    else:
        from ctxsim.reference.import_reference import import_reference

        t = time.perf_counter()
        n = import_reference(path, "cub", out=Path(path).with_suffix(".ctxsim.pt")).n_tensors
    s = time.perf_counter() - t
    print(json.dumps({"s": s, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "tensors": n}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--one", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one(*args.one)
        return
    with tempfile.TemporaryDirectory() as d:
        path = make_file(Path(d))
        size_mb = path.stat().st_size / 2**20
        rows = []
        for mode in ("torch.load", "restricted_load", "import_reference"):
            runs = []
            for _ in range(args.repeats):
                out = subprocess.run([sys.executable, __file__, "--one", mode, str(path)], capture_output=True,
                                     text=True, check=True)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            rows.append((mode, statistics.median(r["s"] for r in runs), max(r["rss_mb"] for r in runs),
                         runs[0]["tensors"]))
    base = rows[0][1]
    print(f"file: ResNet-50 CUB_Network, {size_mb:.0f} MiB, {args.repeats} repeats, 1 thread")
    print(f"{'reader':<18} {'seconds':>8} {'peak RSS MiB':>13} {'tensors':>8} {'x torch.load':>13}")
    for mode, s, rss, n in rows:
        print(f"{mode:<18} {s:>8.3f} {rss:>13.0f} {n:>8} {s / base:>13.2f}")


if __name__ == "__main__":
    main()
