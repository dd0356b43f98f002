"""Summaries over seeds, the per-user significance tests and the rank marks of the tables."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Level of the tests behind the dagger marks.
ALPHA = 0.05
#: No dagger is printed from fewer seeds than this.
MIN_SEEDS = 3
#: Decimals shown in the tables; ranks are taken on values rounded to this.
DECIMALS = 4


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
class UserTest:
    """Paired tests of model ``a`` against model ``b`` over test users.

    Each user's metric is first averaged over the seeds both models ran (the split is the
    same for every seed, so a user is one paired observation); the tests then pair users.

    Attributes:
        seeds: The common seeds.
        n_users: Users present in every per-user file of both models.
        wilcoxon_p: Two-sided Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon``, zero
            differences dropped); nan when every difference is zero or no file exists.
        ttest_p: Two-sided paired t-test p-value over users (``scipy.stats.ttest_rel``).
        mean_diff: Mean over users of ``a - b``.
        note: Why no test was run (empty when it was).
    """

    seeds: tuple[int, ...]
    n_users: int
    wilcoxon_p: float
    ttest_p: float
    mean_diff: float
    note: str = ""

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def a_better(self, alpha: float = ALPHA) -> bool:
        """``a`` beats ``b``: Wilcoxon p < alpha, ``a`` higher, at least :data:`MIN_SEEDS` seeds."""
        return (self.n_seeds >= MIN_SEEDS and not math.isnan(self.wilcoxon_p)
                and self.wilcoxon_p < alpha and self.mean_diff > 0)


def seed_averaged(per_seed: Sequence[tuple[np.ndarray, np.ndarray]]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Average per-user values over seeds, keeping users present in every seed.

    Args:
        per_seed: ``(users, values)`` per seed.

    Returns:
        ``(users, mean values)`` with users sorted.
    """
    users = per_seed[0][0]
    for u, _ in per_seed[1:]:
        users = np.intersect1d(users, u)
    users = np.unique(users)
    total = np.zeros(users.size, dtype=np.float64)
    for u, v in per_seed:
        order = np.argsort(u, kind="stable")
        pos = order[np.searchsorted(u, users, sorter=order)]
        total += np.asarray(v, dtype=np.float64)[pos]
    return users, total / len(per_seed)


def user_test(a: dict[int, tuple[np.ndarray, np.ndarray]],
              b: dict[int, tuple[np.ndarray, np.ndarray]]) -> UserTest:
    """Wilcoxon signed-rank and paired t-test of ``a`` against ``b`` over users.

    Args:
        a, b: seed -> ``(users, per-user values)`` of one metric.
    """
    from scipy.stats import ttest_rel, wilcoxon

    seeds = tuple(sorted(set(a) & set(b)))
    if not seeds:
        return UserTest(seeds, 0, math.nan, math.nan, math.nan, "no per-user files to pair")
    ua, va = seed_averaged([a[s] for s in seeds])
    ub, vb = seed_averaged([b[s] for s in seeds])
    users, ia, ib = np.intersect1d(ua, ub, return_indices=True)
    x, y = va[ia], vb[ib]
    diff = x - y
    if users.size < 2:
        return UserTest(seeds, int(users.size), math.nan, math.nan, math.nan,
                        "fewer than 2 common test users")
    if not np.any(diff):
        return UserTest(seeds, int(users.size), math.nan, math.nan, 0.0,
                        "identical per-user values")
    with warnings.catch_warnings():
        # Few non-zero differences make scipy warn about the normal approximation.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        w = wilcoxon(x, y)
        t = ttest_rel(x, y)
    return UserTest(seeds, int(users.size), float(w.pvalue), float(t.pvalue),
                    float(diff.mean()))


def ranks(values: Sequence[float], decimals: int = DECIMALS) -> list[int | None]:
    """1 for the largest value, 2 for the next one, None otherwise; nan never ranks.

    Values are compared as displayed, rounded to ``decimals``: values equal there are tied
    and share a rank (two bold cells), and the next distinct value is second.
    """
    shown = [round(v, decimals) if not math.isnan(v) else math.nan for v in values]
    distinct = sorted({v for v in shown if not math.isnan(v)}, reverse=True)
    rank_of = {v: i + 1 for i, v in enumerate(distinct[:2])}
    return [rank_of.get(v) if not math.isnan(v) else None for v in shown]


__all__ = ["ALPHA", "DECIMALS", "MIN_SEEDS", "Stat", "UserTest", "ranks", "seed_averaged",
           "user_test"]
