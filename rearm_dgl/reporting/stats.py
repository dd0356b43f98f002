"""Summaries over seeds and the paired significance test used by the tables."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Level of the paired t-test behind the dagger marks.
ALPHA = 0.05


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (ddof=1; 0 for one seed) of one metric.

    Attributes:
        by_seed: seed -> value, so paired tests can match runs by seed.
    """

    mean: float
    std: float
    n: int
    by_seed: dict[int, float]

    @classmethod
    def of(cls, by_seed: dict[int, float]) -> Stat:
        values = np.array([by_seed[s] for s in sorted(by_seed)], dtype=np.float64)
        std = float(values.std(ddof=1)) if values.size > 1 else 0.0
        return cls(float(values.mean()), std, int(values.size), dict(sorted(by_seed.items())))


@dataclass(frozen=True)
class PairedTest:
    """Two-sided paired t-test of ``a`` against ``b`` over their common seeds."""

    seeds: tuple[int, ...]
    statistic: float
    pvalue: float

    @property
    def n(self) -> int:
        return len(self.seeds)

    def a_better(self, a: Stat, b: Stat, alpha: float = ALPHA) -> bool:
        """``a`` beats ``b``: higher mean and p < alpha (never with fewer than 2 pairs)."""
        return (self.n >= 2 and not math.isnan(self.pvalue) and self.pvalue < alpha
                and a.mean > b.mean)


def paired_test(a: Stat, b: Stat) -> PairedTest:
    """``scipy.stats.ttest_rel`` over the seeds both ``a`` and ``b`` have."""
    from scipy.stats import ttest_rel

    seeds = tuple(sorted(set(a.by_seed) & set(b.by_seed)))
    if len(seeds) < 2:
        return PairedTest(seeds, math.nan, math.nan)
    x = [a.by_seed[s] for s in seeds]
    y = [b.by_seed[s] for s in seeds]
    with warnings.catch_warnings():
        # Identical pairs make the statistic undefined: scipy warns and returns nan (no mark).
        warnings.simplefilter("ignore", RuntimeWarning)
        res = ttest_rel(x, y)
    return PairedTest(seeds, float(res.statistic), float(res.pvalue))


def ranks(values: Sequence[float]) -> list[int | None]:
    """1 for the largest value, 2 for the second largest, None otherwise (nan never ranks)."""
    order = sorted((i for i, v in enumerate(values) if not math.isnan(v)),
                   key=lambda i: -values[i])
    out: list[int | None] = [None] * len(values)
    for rank, i in enumerate(order[:2], 1):
        out[i] = rank
    return out


__all__ = ["ALPHA", "PairedTest", "Stat", "paired_test", "ranks"]
