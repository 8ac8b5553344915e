"""Training: RunConfig, the paper's recipes, the engine (fit) and its checkpoints (seed-spec §3)."""

from ctxsim.train.config import ModelSpec, RunConfig
from ctxsim.train.recipes import recipe, recipe_provenance

__all__ = [
    "RunConfig", "ModelSpec", "recipe", "recipe_provenance", "fit", "FitResult", "load_checkpoint_model",
    "run_foreground", "evaluate", "default_run_dir",
]


def __getattr__(name):
    # the engine imports torch: load it on first use so that config/recipes stay light for the CLI
    if name in ("fit", "FitResult", "run_foreground", "evaluate", "default_run_dir"):
        from ctxsim.train import engine

        return getattr(engine, name)
    if name == "load_checkpoint_model":
        from ctxsim.train.checkpoint import load_checkpoint_model

        return load_checkpoint_model
    raise AttributeError(f"module 'ctxsim.train' has no attribute {name!r}")
