"""Sweep expansion: the comma-separated axes of ``ctxsim sweep`` as a list of checked run configs.

A sweep is the cartesian product datasets x losses x resolutions x seeds x every ``--set`` axis;
``build_grid`` expands and validates it (unknown names, keys and values raise ConfigError before
anything is written), ``preflight_grid`` runs ``ctxsim.train.preflight`` on each config once.
The CLI, ``reproduce`` and the dashboard share these, so a grid means the same everywhere.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Optional

from ctxsim.errors import ConfigError, DataError, one_line

GridCell = tuple[Any, list[str]]  # (RunConfig, its "key=value" --set assignments)


def split_values(values: str) -> list[str]:
    """``"cub, cars,"`` -> ``["cub", "cars"]``."""
    return [v.strip() for v in values.split(",") if v.strip()]


def parse_seeds(spec: Optional[str]) -> list[Optional[int]]:
    """``3`` -> [0, 1, 2]; ``0,5,7`` -> those seeds; None -> [None] (the recipe's seed)."""
    if spec is None:
        return [None]
    try:
        nums = [int(p) for p in split_values(spec)]
    except ValueError:
        raise ConfigError(f"--seeds: expected a count (3) or a list (0,5,7), got {spec!r}") from None
    if len(nums) == 1 and "," not in spec:
        if nums[0] < 1:
            raise ConfigError(f"--seeds: count must be >= 1, got {nums[0]}")
        return list(range(nums[0]))
    return nums


def set_axes(sets: list[str]) -> list[list[str]]:
    """``["lr=1e-4,1e-3"]`` -> ``[["lr=1e-4", "lr=1e-3"]]``: one grid axis per ``--set``."""
    axes = []
    for a in sets:
        if "=" not in a:
            raise ConfigError(f"--set expects key=value1,value2,..., got {a!r}")
        key, vals = a.split("=", 1)
        axes.append([f"{key.strip()}={v}" for v in (split_values(vals) or [""])])
    return axes


def build_grid(datasets: str, losses: str, resolutions: Optional[str], seeds: Optional[str], sets: list[str],
               epochs: Optional[int] = None, root: Optional[str] = None, profile: Optional[str] = None,
               recipe_family: Optional[str] = None) -> list[GridCell]:
    """The cartesian product of a sweep: [(validated RunConfig, its --set assignments)]. ``resolutions``
    None: each recipe family's own (256 for the paper's, 224 for vit-s16-224).

    Raises ConfigError on any unknown dataset, loss, key or bad value (before anything is written)."""
    from ctxsim.train.configure import configure

    axes = set_axes(sets)
    try:
        res_list = [None] if resolutions is None else [int(r) for r in split_values(resolutions)]
    except ValueError:
        raise ConfigError(f"--resolution: expected 224 and/or 256, got {resolutions!r}") from None
    ds_list, loss_list, seed_list = split_values(datasets), split_values(losses), parse_seeds(seeds)
    if not ds_list or not loss_list or not res_list:
        raise ConfigError("--dataset, --loss and --resolution each need at least one value")
    cells = []
    for ds, loss, res, seed, *assign in itertools.product(ds_list, loss_list, res_list, seed_list, *axes):
        cfg = configure(ds, loss, res, root=root, sets=list(assign), epochs=epochs, seed=seed, profile=profile,
                        recipe_family=recipe_family)
        cells.append((cfg, list(assign)))
    return cells


def preflight_grid(cfgs: list, host: bool = True) -> None:
    """``ctxsim.train.preflight`` for every config of a grid, before any job row exists: the config
    checks for each, the host checks (data, device, sampler) once per config that differs in more than
    its seed. Raises the first ConfigError / DataError (exit 2), naming the config when there are several."""
    from ctxsim.names import require_trackers
    from ctxsim.train.preflight import check_config, check_host

    seen: set[str] = set()
    for c in cfgs:
        try:
            check_config(c)
            key = json.dumps({k: v for k, v in c.to_dict().items() if k not in ("seed", "name", "tags")},
                             sort_keys=True, default=str)
            if host and key not in seen:
                require_trackers(c.track)  # as ctxsim run: a missing tracker library, one line, no job
                check_host(c)
                seen.add(key)
        except (ConfigError, DataError) as e:
            if len(cfgs) == 1:
                raise
            raise type(e)(f"{c.summary()}: {one_line(e)}") from None
