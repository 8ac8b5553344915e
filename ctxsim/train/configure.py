"""One way from the user's choices to a RunConfig, shared by ``ctxsim run``, ``ctxsim sweep`` and the
dashboard's new-run form: the recipe, then ``--set`` assignments, then the explicit flags (the flags
win over ``--set``)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from ctxsim.train.config import RunConfig


def configure(dataset: str, loss: str, resolution: Optional[int] = None, root: Optional[str] = None,
              sets: Optional[Sequence[str]] = None, epochs: Optional[int] = None, seed: Optional[int] = None,
              device: Optional[str] = None, name: Optional[str] = None, tags: Optional[Sequence[str]] = None,
              *, skip_bad_images: bool = False, backbone_weights: Optional[str] = None,
              profile: Optional[str] = None, recipe_family: Optional[str] = None) -> RunConfig:
    """``recipe(dataset, loss, resolution)``, then the ``key=value`` assignments of ``sets``, then the
    flags that are given (root, epochs, seed, device, name, tags, skip_bad_images, backbone_weights:
    "imagenet", "none" or a weights file). ``profile`` ("reference" | "fixed", or a ``profile=`` among
    ``sets``; None: the recipe's default) picks the switches' values before the other assignments, so
    an explicit ``--set`` of a switch wins. ``recipe_family`` ("paper" or "vit-s16-224", or a
    ``recipe=`` among ``sets``; None: "paper") picks the recipe table; ``resolution`` None is 256 for
    the paper's recipes and 224 for the ViT one. The result is validated; bad input is a ConfigError."""
    from ctxsim.train.recipes import recipe

    assignments = []
    for a in sets or []:
        key, sep, value = a.partition("=")
        if sep and key.strip() == "profile":
            profile = value.strip()
        elif sep and key.strip() == "recipe":
            recipe_family = value.strip()
        else:
            assignments.append(a)
    family = recipe_family or "paper"
    if family == "paper" and resolution is None:
        resolution = 256
    cfg = recipe(dataset, loss, None if resolution is None else int(resolution), profile=profile, family=family)
    if backbone_weights is not None:  # a model field: parsed like its --set (after them: it wins)
        assignments.append(f"model.backbone_weights={backbone_weights}")
    if assignments:
        cfg = cfg.with_sets(assignments)
    over: dict[str, Any] = {}
    if root is not None:
        over["root"] = root
    if epochs is not None:
        over["epochs"] = epochs
    if seed is not None:
        over["seed"] = seed
    if device is not None:
        over["device"] = device
    if name is not None:
        over["name"] = name
    if tags:
        over["tags"] = list(tags)
    if skip_bad_images:
        over["skip_bad_images"] = True
    return (cfg.with_overrides(**over) if over else cfg).validate()
