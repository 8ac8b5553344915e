"""Profiles: the reference code exactly (``reference``) or ctxsim's corrected behaviour (``fixed``).

Every difference between the two profiles is one named switch, a RunConfig field, listed in
``SWITCHES`` with its value under each profile and why it matters (docs/profiles.md). A recipe
resolves the switches from its profile when the config is built; a ``--set`` of a switch after that
wins and is recorded (``profile_deviations`` names such switches). Pure data: no torch import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ctxsim.errors import ConfigError
from ctxsim.names import PAPER_DATASETS
from ctxsim.train.config import PROFILES, RunConfig

__all__ = ["PROFILES", "SWITCHES", "Switch", "apply_profile", "default_profile", "profile_deviations",
           "profile_values", "switch_rows"]

# reference-implementation.md §3.1 / §3.2 / §5: the K lists each reference script reports
_KS_224 = {"cub": [1, 2, 4, 8, 16, 32], "cars": [1, 2, 4, 8, 16, 32], "sop": [1, 10, 100, 1000]}
_KS_256 = {"cub": [1, 2, 4, 8], "cars": [1, 2, 4, 8], "sop": [1, 10, 100], "inat": [1, 4, 16, 32],
           "inshop": [1, 10, 20, 30, 40, 50]}
# reference-implementation.md §3.2: main.py writes RandomResizedCrop(ratio=(0.75, 1.33)), not (3/4, 4/3)
_RATIO_AS_WRITTEN = [0.75, 1.33]
# the 256 transforms that write the ratio out (iNat's loader keeps torchvision's default)
_RATIO_DATASETS = tuple(d for d in PAPER_DATASETS if d != "inat")


@dataclass(frozen=True)
class Switch:
    """One behaviour in which the profiles differ: the RunConfig ``field`` that holds it, its value
    under each profile as a function of (dataset, loss, resolution), and why it matters."""

    name: str
    field: str
    reference: Callable[[str, str, int], Any]
    fixed: Callable[[str, str, int], Any]
    why: str

    def value(self, profile: str, dataset: str, loss: str, resolution: int) -> Any:
        return (self.reference if profile == "reference" else self.fixed)(dataset, loss, int(resolution))


SWITCHES: tuple[Switch, ...] = (
    Switch("proxies_per_image", "proxies_per_image",
           lambda d, l, r: r == 224 and l in ("proxy_anchor", "proxy_nca"),
           lambda d, l, r: False,
           "224 nb_classes() returns the number of training images: one proxy per image, Proxy-Anchor's "
           "negative term divided by that count (reference-implementation §9.4); the published 224 proxy rows "
           "come from it"),
    Switch("proxy_grad_accumulate", "proxy_grad_accumulate",
           lambda d, l, r: r == 256 and l in ("proxy_nca", "normsoftmax"),
           lambda d, l, r: False,
           "main.py never zeroes the proxy optimizer's gradients, so they sum over the whole run (§9.5)"),
    Switch("jpeg_draft", "jpeg_draft",
           lambda d, l, r: False,
           lambda d, l, r: True,
           "ctxsim decodes large JPEGs in PIL draft mode (DCT down-scaling) where the resample would shrink "
           "them 2x anyway; faster, but not the reference's pixels"),
    Switch("bottleneck_fp32", "bottleneck_fp32",
           lambda d, l, r: r == 224,
           lambda d, l, r: False,
           "the 224 code casts the network output to float and applies the projector after autocast; "
           "computing it in half precision changes the loss slightly"),
    Switch("rrc_ratio", "rrc_ratio",
           lambda d, l, r: list(_RATIO_AS_WRITTEN) if r == 256 and d in _RATIO_DATASETS else None,
           lambda d, l, r: None,
           "main.py writes the RandomResizedCrop aspect range as (0.75, 1.33), a hair narrower than "
           "torchvision's (3/4, 4/3) that ctxsim uses (None)"),
    Switch("ks", "ks",
           lambda d, l, r: list((_KS_224 if r == 224 else _KS_256).get(d, [])) or None,
           lambda d, l, r: None,
           "the K list each reference script reports (224 CUB/Cars: 1-32; 256 SOP: 1,10,100); None is the "
           "dataset's standard list"),
    Switch("full_map", "full_map",
           lambda d, l, r: r == 224 and d in ("cub", "cars"),
           lambda d, l, r: False,
           "the 224 CUB/Cars evaluation also reports mAP over the full ranking"),
    Switch("select", "select",
           lambda d, l, r: "last" if r == 224 else "best",
           lambda d, l, r: "last",
           "main.py reloads the checkpoint with the best test R@1 (model selection on the test set, marked "
           "with a dagger; §9.6); the 224 code reports the last epoch"),
)
_BY_NAME = {s.name: s for s in SWITCHES}


def default_profile(dataset: str) -> str:
    """``reference`` for the five paper datasets, ``fixed`` for the small ones."""
    return "reference" if dataset in PAPER_DATASETS else "fixed"


def _check(profile: str) -> str:
    if profile not in PROFILES:
        raise ConfigError(f"profile must be one of {', '.join(PROFILES)}; got {profile!r}")
    return profile


def profile_values(profile: str, dataset: str, loss: str, resolution: int) -> dict[str, Any]:
    """The value of every switch field under ``profile`` for a dataset, loss and resolution family."""
    _check(profile)
    return {s.field: s.value(profile, dataset, loss, resolution) for s in SWITCHES}


def apply_profile(cfg: RunConfig, profile: str) -> RunConfig:
    """A copy of ``cfg`` with ``profile`` recorded and every switch set to that profile's value."""
    vals = profile_values(profile, cfg.dataset, cfg.loss, cfg.resolution)
    return cfg.with_overrides(profile=profile, **vals)


def profile_deviations(cfg: RunConfig) -> list[str]:
    """Switches whose value is not the one ``cfg.profile`` prescribes, as ``"name value≠expected"``."""
    out = []
    for s in SWITCHES:
        want = s.value(cfg.profile, cfg.dataset, cfg.loss, cfg.resolution)
        have = getattr(cfg, s.field)
        if have != want:
            out.append(f"{s.name} {_fmt(have)}≠{_fmt(want)}")
    return out


def switch_rows(cfg: RunConfig) -> list[dict[str, Any]]:
    """One row per switch for ``ctxsim show``: its value in this config, under each profile, and why."""
    return [{"switch": s.name, "value": getattr(cfg, s.field),
             "reference": s.value("reference", cfg.dataset, cfg.loss, cfg.resolution),
             "fixed": s.value("fixed", cfg.dataset, cfg.loss, cfg.resolution), "why": s.why}
            for s in SWITCHES]


def _fmt(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ",".join(map(str, v)) + "]"
    return str(v)
