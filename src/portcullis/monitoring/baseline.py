"""Exponentially weighted baselines over fixed windows, per key, with a bounded key table.

A :class:`Baseline` is the mean and variance of one number measured once per closed window
(calls in a minute, mean argument bytes in a minute, …), updated as an exponentially weighted
moving average: ``mean += a·(x - mean)``, ``var = (1 - a)·(var + a·(x - mean_old)²)``. It needs
two floats and a count; old windows fade with weight ``(1 - a)^age``, so a slow ramp moves the
baseline with it while a jump stands out. :meth:`Baseline.threshold` is ``mean + k·sd`` with the
standard deviation never below a noise floor (``sqrt(mean)`` for counts — the spread of a Poisson
process —, a fraction of the mean for sizes, an absolute one for ratios and region counts), so perfectly steady
traffic (variance 0) does not alert on its first extra call.

:class:`BoundedTable` is an insertion-ordered dict used as an LRU: at most ``cap`` keys; touching
a key moves it to the end; a new key past the cap evicts the least recently used one and counts it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Baseline:
    """EWMA mean and variance of one per-window number."""

    __slots__ = ("mean", "n", "var")

    def __init__(self) -> None:
        self.mean = 0.0
        self.var = 0.0
        self.n = 0  # windows folded in

    def fold(self, x: float, alpha: float) -> None:
        if self.n == 0:
            self.mean, self.var = x, 0.0
        else:
            delta = x - self.mean
            self.mean += alpha * delta
            self.var = (1.0 - alpha) * (self.var + alpha * delta * delta)
        self.n += 1

    def sd(self, noise_floor: float) -> float:
        return max(math.sqrt(self.var), noise_floor)

    def threshold(self, k: float, noise_floor: float) -> float:
        return self.mean + k * self.sd(noise_floor)


def count_noise(mean: float) -> float:
    """The noise floor of a count per window: a Poisson process's standard deviation, at least 1."""
    return max(1.0, math.sqrt(max(mean, 0.0)))


def size_noise(mean: float) -> float:
    """The noise floor of a mean size: a tenth of the mean, at least one byte."""
    return max(1.0, 0.1 * mean)


def ratio_noise(_mean: float) -> float:
    """The noise floor of an error or denial ratio: five percentage points."""
    return 0.05


def region_noise(_mean: float) -> float:
    """The noise floor of a count of regions: 0.2, so a caller always seen in one region (variance 0) is
    over its threshold (1.8 at k=4) in a window from two; one that roams now and then has the variance to
    match. Regions are few: a count's Poisson floor (at least 1) would need five to alert."""
    return 0.2


class BoundedTable(Generic[K, V]):
    """A dict of at most ``cap`` keys, least recently used evicted first (:attr:`evicted` counts)."""

    __slots__ = ("_data", "cap", "evicted")

    def __init__(self, cap: int) -> None:
        if cap < 1:
            raise ValueError("cap must be at least 1")
        self.cap = cap
        self.evicted = 0
        self._data: OrderedDict[K, V] = OrderedDict()

    def get_or_add(self, key: K, new: Callable[[], V]) -> tuple[V, bool]:
        """The value of ``key`` (made by ``new`` if absent) and whether it was absent."""
        data = self._data
        value = data.get(key)
        if value is not None:
            data.move_to_end(key)
            return value, False
        if len(data) >= self.cap:
            data.popitem(last=False)
            self.evicted += 1
        value = data[key] = new()
        return value, True

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def items(self) -> Iterator[tuple[K, V]]:
        return iter(list(self._data.items()))
