"""Search spaces written on the command line, as Optuna distributions.

``--space "lr=loguniform(1e-5,1e-3)" --space "loss.lam=uniform(0,1)"``: one config key (any key
``RunConfig.with_sets`` accepts) and one distribution per entry:

- ``uniform(lo, hi[, step])``   a float in [lo, hi] (optionally on a grid of ``step``)
- ``loguniform(lo, hi)``        a float in [lo, hi], log scale (lo > 0)
- ``int(lo, hi[, step])``       an integer in [lo, hi]
- ``logint(lo, hi)``            an integer in [lo, hi], log scale (lo >= 1)
- ``choice(a, b, ...)``         one of the listed values (numbers, true/false, words)
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from ctxsim.errors import ConfigError
from ctxsim.train.config import parse_literal

KINDS = ("uniform", "loguniform", "int", "logint", "choice")
_ALIASES = {"categorical": "choice", "intuniform": "int", "randint": "int", "loguniformint": "logint",
            "float": "uniform", "log": "loguniform"}
_ENTRY = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*=\s*([A-Za-z_]+)\s*\((.*)\)\s*$")


@dataclass(frozen=True)
class Param:
    """One searched config key: its name, the text it was written as, and its distribution."""

    key: str
    spec: str
    distribution: BaseDistribution

    def set_arg(self, value: Any) -> str:
        """The ``key=value`` assignment that puts a sampled value into a config."""
        if isinstance(value, bool):
            return f"{self.key}={'true' if value else 'false'}"
        if isinstance(value, float):
            return f"{self.key}={value!r}"
        return f"{self.key}={value}"


def _number(raw: str, entry: str) -> float:
    try:
        v = float(raw)
    except ValueError:
        raise ConfigError(f"--space {entry!r}: {raw.strip()!r} is not a number") from None
    if not math.isfinite(v):
        raise ConfigError(f"--space {entry!r}: bounds must be finite, got {raw.strip()}")
    return v


def _choice_value(raw: str) -> Any:
    raw = raw.strip()
    v = parse_literal(raw)
    if v is raw:  # not a literal: a bare or quoted word
        return raw.strip("'\"")
    return v if v is None or isinstance(v, (int, float, str)) else raw


def parse_param(entry: str) -> Param:
    """``"key=kind(args)"`` -> Param; ConfigError (one line) for anything malformed."""
    m = _ENTRY.match(entry or "")
    if not m:
        raise ConfigError(f"--space expects key=kind(args) such as lr=loguniform(1e-5,1e-3), got {entry!r}")
    key, kind, body = m.group(1), m.group(2).lower(), m.group(3)
    kind = _ALIASES.get(kind, kind)
    args = [a for a in (s.strip() for s in body.split(",")) if a]
    if kind not in KINDS:
        raise ConfigError(f"--space {entry!r}: unknown distribution {m.group(2)!r}; choose from {', '.join(KINDS)}")
    if kind == "choice":
        values = [_choice_value(a) for a in args]
        if not values:
            raise ConfigError(f"--space {entry!r}: choice() needs at least one value")
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"--space {entry!r}: choice() lists a value twice")
        return Param(key, entry.strip(), CategoricalDistribution(values))
    if len(args) not in ((2, 3) if kind in ("uniform", "int") else (2,)):
        want = "lo, hi[, step]" if kind in ("uniform", "int") else "lo, hi"
        raise ConfigError(f"--space {entry!r}: {kind}() takes ({want})")
    lo, hi = _number(args[0], entry), _number(args[1], entry)
    step: Optional[float] = _number(args[2], entry) if len(args) == 3 else None
    if not lo < hi:
        raise ConfigError(f"--space {entry!r}: the lower bound must be below the upper bound")
    if step is not None and step <= 0:
        raise ConfigError(f"--space {entry!r}: step must be > 0")
    if kind in ("loguniform",) and lo <= 0:
        raise ConfigError(f"--space {entry!r}: loguniform needs a lower bound > 0")
    if kind in ("int", "logint"):
        if not all(float(v).is_integer() for v in (lo, hi) + ((step,) if step is not None else ())):
            raise ConfigError(f"--space {entry!r}: {kind}() takes integer bounds")
        if kind == "logint" and lo < 1:
            raise ConfigError(f"--space {entry!r}: logint needs a lower bound >= 1")
        return Param(key, entry.strip(), IntDistribution(int(lo), int(hi), log=kind == "logint",
                                                         step=int(step) if step is not None else 1))
    return Param(key, entry.strip(), FloatDistribution(lo, hi, log=kind == "loguniform", step=step))


def parse_space(entries: Sequence[str]) -> list[Param]:
    """Parses every ``--space`` entry; a key given twice is refused."""
    if not entries:
        raise ConfigError("give at least one --space key=kind(args), e.g. --space \"lr=loguniform(1e-5,1e-3)\"")
    params = [parse_param(e) for e in entries]
    seen: set[str] = set()
    for p in params:
        if p.key in seen:
            raise ConfigError(f"--space names {p.key} twice")
        seen.add(p.key)
    return params


def distributions(params: Sequence[Param]) -> dict[str, BaseDistribution]:
    """{key: distribution}, what ``study.ask`` takes."""
    return {p.key: p.distribution for p in params}


def check_keys(params: Sequence[Param], base: Any) -> None:
    """Every key must be settable on ``base`` (a RunConfig): the low end of each range is applied
    once, so an unknown key or a value the config refuses fails before any trial starts."""
    for p in params:
        d = p.distribution
        if isinstance(d, CategoricalDistribution):
            samples = list(d.choices)
        else:
            samples = [d.low, d.high]
        for v in samples:
            try:
                base.with_sets([p.set_arg(v)])
            except ConfigError as e:
                raise ConfigError(f"--space {p.spec!r}: {e}") from None


def corner_configs(params: Sequence[Param], base: Any, limit: int = 64) -> list[Any]:
    """The configs at the corners of the space: every combination of each range's ends (each
    category for a choice), or, past ``limit`` combinations, each end with the others at ``base``;
    ``base`` first. What a trial could be is checked on these before any trial is queued."""
    ends = [list(p.distribution.choices) if isinstance(p.distribution, CategoricalDistribution)
            else [p.distribution.low, p.distribution.high] for p in params]
    if math.prod(len(e) for e in ends) <= limit:
        combos = [list(zip(params, c)) for c in itertools.product(*ends)]
    else:
        combos = [[(p, v)] for p, e in zip(params, ends) for v in e]
    return [base] + [base.with_sets([p.set_arg(v) for p, v in combo]) for combo in combos]
