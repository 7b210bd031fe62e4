"""Bounded, mergeable statistics: what the history keeps instead of samples.

:class:`Summary` keeps a count, sum, min and max and a DDSketch (the quantile sketch of
Datadog's ``ddsketch`` package, relative accuracy 2 %: one bin per 4 % of the range seen,
so a few hundred bins however many samples), so any percentile reads back within 2 %, and
two summaries merge as if their samples had been added to one (a run adds at most a few
hundred samples of each kind, weighted). :class:`Fit` keeps the sums of a least-squares
line, so it merges by adding. Both serialize to plain JSON (the sketch as base64
protobuf, the library's own format): a history shared in Redis never unpickles what
others wrote.
"""

from __future__ import annotations

import base64
import math
import random
from dataclasses import dataclass, field
from typing import Any

from ddsketch import DDSketch
from ddsketch.ddsketch import BaseDDSketch

RELATIVE_ACCURACY = 0.02
#: Samples of one run that go into a sketch at most (see :meth:`Summary.of`).
SKETCH_SAMPLES = 256


def _new_sketch() -> BaseDDSketch:
    return DDSketch(RELATIVE_ACCURACY)


@dataclass
class Summary:
    """Count, mean, extremes and quantiles of non-negative samples."""

    n: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    #: The sketch as JSON holds it, decoded when first read: a run's ranks and a mean
    #: SLA read no quantile, and decoding every function's took most of loading them.
    packed: str | None = field(default=None, repr=False, compare=False)
    _sketch: BaseDDSketch | None = field(default=None, repr=False, compare=False)

    @property
    def sketch(self) -> BaseDDSketch:
        if self._sketch is None:
            self._sketch = _new_sketch() if self.packed is None else _unpack(self.packed)
            self.packed = None
        return self._sketch

    @classmethod
    def of(cls, values: list[float], rng: random.Random | None = None) -> Summary:
        """The summary of ``values``: count, sum and extremes exact; the sketch from at
        most :data:`SKETCH_SAMPLES` of them, each weighted for those it stands for (a
        run of 100 000 tasks costs the same few milliseconds as one of a thousand)."""
        out = cls()
        if not values:
            return out
        values = [v if v > 0.0 else 0.0 for v in values]
        out.n, out.total, out.low, out.high = len(values), sum(values), min(values), max(values)
        if len(values) <= SKETCH_SAMPLES:
            for v in values:
                out.sketch.add(v)
        else:
            weight = len(values) / SKETCH_SAMPLES
            for v in (rng or random).sample(values, SKETCH_SAMPLES):
                out.sketch.add(v, weight)
        return out

    def merge(self, other: Summary) -> None:
        if not other.n:
            return
        self.n += other.n
        self.total += other.total
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)
        self.sketch.merge(other.sketch)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0..1), within the sketch's accuracy and the seen range."""
        if not self.n:
            return 0.0
        value = self.sketch.get_quantile_value(q)
        if value is None:
            return self.mean
        return min(self.high, max(self.low, float(value)))

    def at(self, sla: str) -> float:
        """The statistic an SLA names: ``mean`` or a percentile ``pNN``."""
        return self.mean if sla == "mean" else self.quantile(int(sla[1:]) / 100)

    def to_json(self) -> dict[str, Any]:
        packed = self.packed
        if packed is None:
            from ddsketch.pb.proto import DDSketchProto  # protobuf: ~10 ms to import

            blob = DDSketchProto.to_proto(self.sketch).SerializeToString()
            packed = base64.b64encode(blob).decode("ascii")
        return {
            "n": self.n,
            "sum": self.total,
            "min": self.low if self.n else None,
            "max": self.high if self.n else None,
            "sketch": packed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        return cls(
            n=int(data.get("n", 0)),
            total=float(data.get("sum", 0.0)),
            low=math.inf if data.get("min") is None else float(data["min"]),
            high=-math.inf if data.get("max") is None else float(data["max"]),
            packed=data["sketch"] if data.get("n") else None,
        )


def _unpack(packed: str) -> BaseDDSketch:
    from ddsketch.pb.proto import DDSketchProto, pb

    return DDSketchProto.from_proto(pb.DDSketch.FromString(base64.b64decode(packed)))


@dataclass
class Fit:
    """An ordinary least-squares line ``y = a + b x`` from running sums."""

    n: int = 0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0
    syy: float = 0.0

    @classmethod
    def of(cls, xs: list[float], ys: list[float]) -> Fit:
        return cls(
            len(xs),
            sum(xs),
            sum(ys),
            sum(x * x for x in xs),
            sum(x * y for x, y in zip(xs, ys, strict=True)),
            sum(y * y for y in ys),
        )

    def merge(self, other: Fit) -> None:
        self.n += other.n
        self.sx += other.sx
        self.sy += other.sy
        self.sxx += other.sxx
        self.sxy += other.sxy
        self.syy += other.syy

    def line(self) -> tuple[float, float] | None:
        """(intercept, slope), or None while ``x`` has not varied (nothing to fit)."""
        if self.n < 2:
            return None
        spread = self.n * self.sxx - self.sx * self.sx
        if spread <= 1e-12 * max(1.0, self.sxx * self.n):
            return None
        slope = (self.n * self.sxy - self.sx * self.sy) / spread
        return (self.sy - slope * self.sx) / self.n, slope

    def r2(self) -> float:
        """How much of ``y``'s variance the line explains (0 when there is no line)."""
        if self.line() is None:
            return 0.0
        var_x = self.n * self.sxx - self.sx * self.sx
        var_y = self.n * self.syy - self.sy * self.sy
        if var_y <= 1e-12 * max(1.0, self.syy * self.n):
            return 0.0
        cov = self.n * self.sxy - self.sx * self.sy
        return min(1.0, cov * cov / (var_x * var_y))

    def slope_error(self) -> float | None:
        """The standard error of the line's slope (None without a line): how far the
        slope may be off, given how the points scatter about it and how far apart their
        ``x`` lie. Two points show no scatter: their line goes through both (0)."""
        if self.line() is None:
            return None
        n = self.n
        if n == 2:
            return 0.0
        sxx = self.sxx - self.sx * self.sx / n
        syy = self.syy - self.sy * self.sy / n
        sxy = self.sxy - self.sx * self.sy / n
        residual = max(0.0, syy - sxy * sxy / sxx)
        return math.sqrt(residual / (n - 2) / sxx)

    def to_json(self) -> list[float]:
        return [self.n, self.sx, self.sy, self.sxx, self.sxy, self.syy]

    @classmethod
    def from_json(cls, data: list[float]) -> Fit:
        n, sx, sy, sxx, sxy, syy = data
        return cls(int(n), sx, sy, sxx, sxy, syy)
