"""Training: RunConfig, the paper's recipes, building a run (build), its loop (Trainer), fit and its
checkpoints, and the evaluation of a run's model (reference-implementation.md §3)."""

from ctxsim.train.config import ModelSpec, RunConfig
from ctxsim.train.configure import configure
from ctxsim.train.recipes import recipe, recipe_provenance

__all__ = [
    "RunConfig", "ModelSpec", "recipe", "recipe_provenance", "configure", "fit", "fit_in_dir", "FitResult",
    "Trainer", "load_checkpoint_model", "evaluate_model", "evaluate_checkpoint",
]

# torch-heavy names, loaded on first use so that config/recipes/configure stay light for the CLI
_LAZY = {
    "fit": "ctxsim.train.engine", "fit_in_dir": "ctxsim.train.engine",
    "FitResult": "ctxsim.train.trainer", "Trainer": "ctxsim.train.trainer",
    "evaluate_model": "ctxsim.train.evaluation", "evaluate_checkpoint": "ctxsim.train.evaluation",
    "load_checkpoint_model": "ctxsim.train.checkpoint",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ctxsim.train' has no attribute {name!r}")
