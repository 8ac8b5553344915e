"""One home for names (ctxsim.names): every module uses its tables, every spelling of a loss or a
dataset resolves the same everywhere, and the module stays torch-free."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from ctxsim import names
from ctxsim.errors import ConfigError
from ctxsim.names import (
    ARCHS,
    DATASETS,
    LOSS_ALIASES,
    LOSSES,
    PAPER_DATASETS,
    PAPER_DATASETS_BY_RESOLUTION,
    SMALL_DATASETS,
    canonical_dataset,
    canonical_loss,
)
from ctxsim.registry.states import JOB_STATUS_STYLE

ROOT = Path(__file__).resolve().parents[1]


def test_names_is_torch_free():
    code = "import sys, ctxsim.names, ctxsim.errors; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_tables_are_consistent():
    assert DATASETS == PAPER_DATASETS + SMALL_DATASETS and len(set(DATASETS)) == len(DATASETS)
    assert PAPER_DATASETS_BY_RESOLUTION == {224: ("cub", "cars", "sop"), 256: PAPER_DATASETS}
    assert set(LOSS_ALIASES.values()) == set(LOSSES)
    assert set(names.PROXY_LOSSES) <= set(LOSSES) and "resnet50" in ARCHS


def test_every_module_uses_the_one_table():
    import ctxsim.data
    import ctxsim.losses
    import ctxsim.models
    import ctxsim.train.config
    import ctxsim.train.recipes
    from ctxsim.baselines.names import LOSS_METHODS
    from ctxsim.tui.format import STATUS_STYLE

    assert ctxsim.models.ARCHS is ARCHS and ctxsim.train.config.ARCHS is ARCHS
    assert ctxsim.data.DATASETS is DATASETS and ctxsim.train.recipes.DATASETS is DATASETS
    assert ctxsim.train.recipes.LOSS_NAMES is LOSSES and ctxsim.losses.LOSSES is LOSSES
    assert tuple(ctxsim.losses._REGISTRY) == LOSSES  # one loss class per name, same order
    assert set(LOSS_METHODS) == set(LOSSES)  # each loss has its paper method names
    assert STATUS_STYLE is JOB_STATUS_STYLE  # the dashboard's colours are the CLI's


def _strings(nodes) -> list[str]:
    return [n.value for n in nodes if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_no_module_keeps_its_own_copy_of_a_name_table():
    """No literal list of three or more dataset/loss/arch names, and no alias table mapping to them,
    outside ctxsim/names.py (tables keyed by dataset, like the recipes, are data, not copies)."""
    known = set(DATASETS) | set(LOSSES) | set(ARCHS)
    for folder in ("ctxsim", "cli", "tui"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "ctxsim" / "names.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                    found = set(_strings(node.elts)) & known
                elif isinstance(node, ast.Dict):
                    found = set(_strings(node.values)) & known
                else:
                    continue
                assert len(found) < 3, f"{path}:{node.lineno} repeats {sorted(found)}: use ctxsim.names"


def test_every_job_status_has_a_style():
    from ctxsim.registry.models import JOB_STATUSES

    assert set(JOB_STATUSES) | {"stale"} == set(JOB_STATUS_STYLE)


# the spellings the two old alias tables disagreed on, and others users type
LOSS_SPELLINGS = [
    ("multi_similarity", "multisimilarity"), ("MS", "multisimilarity"), ("multi-similarity", "multisimilarity"),
    ("normalizedsoftmax", "normsoftmax"), ("normalized_softmax", "normsoftmax"), ("NormSoftmax", "normsoftmax"),
    ("ms+miner", "ms_miner"), ("MS-miner", "ms_miner"), ("msminer", "ms_miner"),
    ("ProxyAnchor", "proxy_anchor"), ("proxy-anchor", "proxy_anchor"), ("proxynca", "proxy_nca"),
    ("contextual", "hybrid"), (" Hybrid ", "hybrid"), ("supap", "roadmap"), ("smooth_ap", "smoothap"),
    ("NT-Xent", "ntxent"),
]


@pytest.mark.parametrize("spelling, loss", LOSS_SPELLINGS + [(x, x) for x in LOSSES])
def test_a_loss_spelling_resolves_the_same_everywhere(spelling, loss):
    from ctxsim.baselines.names import loss_for_method
    from ctxsim.losses import build_loss
    from ctxsim.train.recipes import normalize_loss

    assert canonical_loss(spelling) == loss
    assert normalize_loss(spelling) == loss  # recipes, `ctxsim run`, `compare --loss`
    assert loss_for_method(spelling) == loss  # the reference-number table's `--method`
    kw = {"num_classes": 4, "embedding_size": 8} if loss in names.PROXY_LOSSES else {}
    assert build_loss(spelling, **kw).loss_name == loss


@pytest.mark.parametrize("spelling, dataset", [
    ("CUB", "cub"), ("cub200", "cub"), ("CUB-200-2011", "cub"), ("cub_200_2011", "cub"),
    ("Cars196", "cars"), ("stanford_cars", "cars"), ("Stanford Online Products", "sop"),
    ("iNaturalist", "inat"), ("inat2021", "inat"), ("In-Shop", "inshop"), ("in_shop", "inshop"),
    ("fashion_mnist", "fashion-mnist"), ("FashionMNIST", "fashion-mnist"), ("fmnist", "fashion-mnist"),
    ("digits", "digits"), ("synthetic", "synthetic"),
])
def test_a_dataset_spelling_resolves_the_same_everywhere(spelling, dataset):
    from ctxsim.baselines.names import normalize_dataset as baseline_dataset
    from ctxsim.train.recipes import normalize_dataset

    assert canonical_dataset(spelling) == dataset
    assert normalize_dataset(spelling) == dataset
    assert baseline_dataset(spelling) == dataset


def test_unknown_names_list_the_choices():
    from ctxsim.baselines.names import normalize_dataset as baseline_dataset

    with pytest.raises(ConfigError, match="unknown loss 'arcface'; choose from: hybrid, contrastive"):
        canonical_loss("arcface")
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'; choose from: cub, cars"):
        canonical_dataset("imagenet")
    with pytest.raises(ConfigError, match="unknown loss"):
        canonical_loss(None)  # type: ignore[arg-type]
    assert baseline_dataset("imagenet") is None
