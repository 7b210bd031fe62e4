"""Scientific-workflow shapes from the WfCommons recipes, as plain data (standard library only).

``workflow("montage", 1000, seed=0)`` returns about 1000 :class:`WfTask` in topological order
(every parent id is smaller than its child's id). Same seed, same Python: same workflow.

Where the shapes come from. The structure of each recipe was read from the real instances
that WfCommons 1.6 ships (Pegasus/Makeflow runs on Chameleon, in
``wfcommons/wfchef/recipes/<recipe>/microstructures/*/base_graph.pickle``) and is rebuilt here at
any size:

- ``montage`` (2MASS, 3 bands j/h/k): per band, one ``mProject`` per sky tile, one ``mDiffFit``
  per overlapping pair of tiles, ``mConcatFit`` -> ``mBgModel``, one ``mBackground`` per tile
  (its ``mProject`` + ``mBgModel``), ``mImgtbl`` and ``mAdd`` over the backgrounds, an ``mViewer``
  per band; a last ``mViewer`` colours the three ``mAdd`` mosaics. Tiles sit on a jittered grid
  and overlap within 2.2 tile widths, which gives the traces' 4-5 ``mDiffFit`` per tile.
- ``epigenomics``: per sequencing lane a ``fastqSplit`` into chunks, each chunk a chain
  ``filterContams`` -> ``sol2sanger`` -> ``fast2bfq`` -> ``map``; a ``mapMerge`` per lane, one
  global ``mapMerge``, then ``chr21`` (maqindex) -> ``pileup``. 1-8 lanes, chunks spread unevenly.
- ``cycles``: locations x crops x simulations (16 or 54 per location and crop, the traces'
  "9p"/"12p"); each simulation ``baseline_cycles`` -> ``cycles`` and ``fertilizer_increase_cycles``
  -> ``cycles_fertilizer_increase_output_parser``; two summaries per location and crop, and one
  ``cycles_plots`` per crop over its locations' ``cycles_output_summary``.
- ``genome`` (1000Genome): per chromosome (at most 22) ``individuals`` tasks ->
  ``individuals_merge``, a root ``sifting``, and for each of 7 populations a ``mutation_overlap``
  and a ``frequency`` (parents: the merge and the sifting).

Where the numbers come from. Runtimes (seconds, trace scale) and output sizes (bytes, summed over
a task's output files) are drawn from the distributions WfCommons fitted on those traces
(``recipes/<recipe>/task_type_stats.json``, the ``runtime`` and ``output`` entries, parameters
rounded to 6 digits) exactly as ``wfcommons.utils.generate_rvs`` does:
``max(0.1, scipy.stats.<name>.rvs(*shape, loc, scale)) * max_seen``, re-implemented below with
``random``. Caveat inherited from the recipes: several fits are degenerate (``rdist`` with
scale ~1e-16), so e.g. every Montage ``mProject`` runs 1263.481 s, ``mDiffFit`` 46.525 s and
``mBackground`` 114.103 s (the largest trace values; a real 2MASS 0.1 deg run has ~16 s and
~0.1 s), and every Epigenomics ``fastqSplit`` 878.473 s; ``dweibull`` fits with shape 0.21 give
Montage's ``mConcatFit``/``mBgModel`` a heavy tail. WfCommons' own generator gives the same.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["RECIPES", "WfTask", "workflow"]


@dataclass(frozen=True)
class WfTask:
    id: int
    category: str
    runtime_s: float
    output_bytes: int
    parents: tuple[int, ...]


RECIPES: tuple[str, ...] = ("montage", "epigenomics", "cycles", "genome")

# A spec is (largest value in the traces, scipy.stats name, *shape, loc, scale): the distribution
# was fitted on value / largest value. Shared ones:
_DEG = ("rdist", 1.75043, 1.0, 0.0)  # degenerate fit (scale ~1e-16): always the largest value
_TRAP = ("trapezoid", 1.0, 1.0, -0.105, 1.2)
_DW = ("dweibull", 0.209927, 0.0769231, 0.496633)
_Spec = tuple[Any, ...]

# category -> (runtime spec, *output file specs), from wfcommons 1.6 task_type_stats.json.
# fmt: off
_STATS: dict[str, dict[str, tuple[_Spec, ...]]] = {
    "montage": {
        "mProject": ((1263.481, *_DEG), (55002240, *_TRAP)),
        "mDiffFit": ((46.525, *_DEG), (302, *_DEG)),
        "mConcatFit": ((12.386, *_DW), (430977, *_DW)),
        "mBgModel": ((110.529, *_DW), (23706, *_DW)),
        "mBackground": ((114.103, *_DEG), (55002240, *_DEG)),
        "mImgtbl": ((1.762, "beta", 0.0313189, 0.12761, -0.0988504, 1.09885), (188372, *_DW)),
        "mAdd": ((23.162, "beta", 0.0334957, 0.12829, -0.0968787, 1.09688), (414722880, *_DEG)),
        "mViewer": ((68.368, *_DEG), (101394221, "dweibull", 0.692357, 0.0416667, 0.400886),
                    (26219448, "dweibull", 0.753896, 0.0322581, 0.470554)),
    },
    "epigenomics": {
        "fastqSplit": ((878.473, *_DEG), (15387524, *_TRAP)),
        "filterContams": ((47.417, "argus", 0.00011942, -0.626794, 1.62805),
                          (13605894, "argus", 0.000172066, -0.74761, 1.74904)),
        "sol2sanger": ((28.568, "argus", 0.000478548, -0.636014, 1.63726), (10074424, *_TRAP)),
        "fast2bfq": ((10.513, "argus", 0.00131722, -0.625563, 1.62683),
                     (2779927, "argus", 0.000202349, -0.652607, 1.65391)),
        "map": ((122.642, "dweibull", 1.37293, 0.189005, 0.2221), (1255720, *_TRAP)),
        "mapMerge": ((37.253, "arcsine", -0.098506, 1.09851),
                     (213287821, "rdist", 1.65529, 0.962963, 0.037037)),
        "chr21": ((120.272, "arcsine", -0.3036, 1.3036), (213287821, "wald", -0.174935, 0.775667)),
        "pileup": ((99.597, "arcsine", -0.111425, 1.11143),
                   (88008977, "dgamma", 45.7791, 0.549075, 0.0100658)),
    },
    "cycles": {
        "baseline_cycles": ((110.598, "argus", 5.73465e-05, -0.680573, 1.68119), (1808675, *_DEG),
                            (281, *_TRAP), (4458415, "argus", 4.42708e-05, -0.712044, 1.71271)),
        "cycles": ((101.596, "argus", 2.46015e-05, -0.760671, 1.76133), (1808675, *_DEG),
                   (281, *_TRAP), (4476265, "argus", 3.76005e-05, -0.663847, 1.66448)),
        "fertilizer_increase_cycles": ((101.229, "argus", 0.000240908, -0.757172, 1.75784),
                                       (1808675, *_DEG), (282, *_TRAP),
                                       (4486752, "argus", 5.01277e-05, -0.668444, 1.66903)),
        "cycles_fertilizer_increase_output_parser": (
            (1.235, *_TRAP), (8604, "argus", 0.000221847, -0.748068, 1.74872)),
        "cycles_output_summary": ((0.39, "norm", 0.0868866, 0.257283), (257366, *_DEG)),
        "cycles_fertilizer_increase_output_summary": (
            (0.538, "argus", 0.000169906, -0.703883, 1.7273), (422954, *_DEG)),
        "cycles_plots": ((514.566, "beta", 0.111652, 0.327857, -0.0995233, 1.09952),
                         (6383929, "norm", 0.35, 0.367848)),
    },
    "genome": {
        "individuals": ((192.232, "argus", 5.19537e-05, -0.692324, 1.69486),
                        (29311, "argus", 0.00243944, -0.411542, 1.4126)),
        "individuals_merge": ((157.346, "rdist", 1.03814, 0.885673, 0.609811),
                              (27336, "norm", 0.18107, 0.268611)),
        "sifting": ((22.686, "norm", 0.203704, 0.275356),
                    (2126612, "dweibull", 1.72747, 0.198228, 0.298397)),
        "mutation_overlap": ((92.154, "argus", 0.000261927, -0.707555, 1.71023), (172605, *_TRAP)),
        "frequency": ((238.26, "dweibull", 1.37103, 0.193906, 0.23184),
                      (298487, "argus", 0.00134055, -0.558707, 1.56165)),
    },
}
# fmt: on


def _standard(rng: random.Random, name: str, shape: tuple[float, ...]) -> float:
    """One draw of ``scipy.stats.<name>(*shape)`` with loc 0 and scale 1."""
    if name == "norm":
        return rng.gauss(0.0, 1.0)
    if name == "beta":
        return rng.betavariate(shape[0], shape[1])
    if name == "arcsine":
        return rng.betavariate(0.5, 0.5)
    if name == "rdist":  # symmetric beta on [-1, 1]
        return 2.0 * rng.betavariate(shape[0] / 2, shape[0] / 2) - 1.0
    if name in ("dweibull", "dgamma"):  # a Weibull / gamma draw with a random sign
        sign = 1.0 if rng.random() < 0.5 else -1.0
        if name == "dweibull":
            return sign * rng.weibullvariate(1.0, shape[0])
        return sign * rng.gammavariate(shape[0], 1.0)
    if name == "trapezoid":  # inverse CDF: rising on [0, c], flat on [c, d], falling on [d, 1]
        c, d = shape
        u, h = rng.random(), 2.0 / (1.0 + d - c)
        if u < c * h / 2:
            return math.sqrt(u * c * (1.0 + d - c))
        if u <= 1.0 - (1.0 - d) * h / 2:
            return c + (u - c * h / 2) / h
        return 1.0 - math.sqrt((1.0 - u) * (1.0 - d) * (1.0 + d - c))
    if name == "argus":  # chi^2 (1 - x^2) / 2 is Gamma(3/2) truncated to [0, chi^2 / 2]
        t = shape[0] ** 2 / 2
        while True:  # propose from density ~ sqrt(g) on [0, t], accept with e^-g
            g = t * rng.random() ** (2.0 / 3.0)
            if rng.random() < math.exp(-g):
                return math.sqrt(1.0 - g / t)
    if name == "wald":  # inverse Gaussian, mean 1 and shape 1 (Michael, Schucany, Haas 1976)
        y = rng.gauss(0.0, 1.0) ** 2
        x = 1.0 + y / 2 - math.sqrt(4.0 * y + y * y) / 2
        return x if rng.random() <= 1.0 / (1.0 + x) else 1.0 / x
    raise ValueError(f"no sampler for distribution {name!r}")


def _draw(rng: random.Random, spec: _Spec) -> float:
    """``wfcommons.utils.generate_rvs``: max(0.1, rvs) times the largest value seen."""
    top, name, *params = spec
    *shape, loc, scale = params
    return float(max(0.1, loc + scale * _standard(rng, name, tuple(shape))) * top)


class _Builder:
    def __init__(self, recipe: str, seed: int) -> None:
        self.stats = _STATS[recipe]
        self.rng = random.Random(f"{recipe}/{seed}")
        self.tasks: list[WfTask] = []

    def add(self, category: str, parents: Iterable[int] = ()) -> int:
        runtime, *outputs = self.stats[category]
        runtime_s = round(_draw(self.rng, runtime), 3)
        output_bytes = sum(int(_draw(self.rng, spec)) for spec in outputs)
        task = WfTask(len(self.tasks), category, runtime_s, output_bytes, tuple(sorted(parents)))
        self.tasks.append(task)
        return task.id


def _overlaps(tiles: int, seed: int) -> list[tuple[int, int]]:
    """Pairs of overlapping sky tiles: a jittered grid, overlap within 2.2 tile widths."""
    rng = random.Random(f"montage-sky/{seed}/{tiles}")
    cols = math.ceil(math.sqrt(tiles))
    xy = [
        (i % cols + rng.uniform(-0.3, 0.3), i // cols + rng.uniform(-0.3, 0.3))
        for i in range(tiles)
    ]
    return [
        (a, b) for a in range(tiles) for b in range(a + 1, tiles) if math.dist(xy[a], xy[b]) <= 2.2
    ]


def _montage(b: _Builder, n: int, seed: int) -> None:
    candidates = []  # (distance to n, tiles, overlapping pairs), tiles growing until >= n
    for tiles in range(2, n + 2):
        pairs = _overlaps(tiles, seed)
        total = 3 * (2 * tiles + len(pairs) + 5) + 1
        candidates.append((abs(total - n), tiles, pairs))
        if total >= n:
            break
    _, tiles, pairs = min(candidates, key=lambda c: c[0])
    mosaics = []
    for _band in "jhk":
        projected = [b.add("mProject") for _ in range(tiles)]
        diffs = [b.add("mDiffFit", (projected[i], projected[j])) for i, j in pairs]
        model = b.add("mBgModel", (b.add("mConcatFit", diffs),))
        corrected = [b.add("mBackground", (p, model)) for p in projected]
        mosaics.append(b.add("mAdd", (*corrected, b.add("mImgtbl", corrected))))
        b.add("mViewer", (mosaics[-1],))
    b.add("mViewer", mosaics)


def _epigenomics(b: _Builder, n: int, seed: int) -> None:
    lanes = max(1, min(8, round(n / 160)))
    chunks = [1] * lanes
    weights = [b.rng.uniform(0.5, 1.5) for _ in range(lanes)]
    total_chunks = round((n - 3 - 2 * lanes) / 4)  # n = 4 chunks + 2 lanes + 3
    for lane in b.rng.choices(range(lanes), weights, k=max(0, total_chunks - lanes)):
        chunks[lane] += 1
    merges = []
    for count in chunks:
        split, maps = b.add("fastqSplit"), []
        for _ in range(count):
            clean = b.add("filterContams", (split,))
            bfq = b.add("fast2bfq", (b.add("sol2sanger", (clean,)),))
            maps.append(b.add("map", (bfq,)))
        merges.append(b.add("mapMerge", maps))
    b.add("pileup", (b.add("chr21", (b.add("mapMerge", merges),)),))


def _cycles(b: _Builder, n: int, seed: int) -> None:
    shapes = [
        (loc, crops, sims)
        for sims in (16, 54)
        for crops in (1, 2, 3)
        for loc in range(1, max(2, n // (4 * sims * crops) + 2))
    ]
    locations, crops, sims = min(shapes, key=lambda s: abs(s[1] * (s[0] * (4 * s[2] + 2) + 1) - n))
    for _crop in range(crops):
        summaries = []
        for _location in range(locations):
            outputs, parsed = [], []
            for _ in range(sims):
                base = b.add("baseline_cycles")
                outputs.append(b.add("cycles", (base,)))
                fertilized = b.add("fertilizer_increase_cycles", (base,))
                parsed.append(
                    b.add("cycles_fertilizer_increase_output_parser", (outputs[-1], fertilized))
                )
            summaries.append(b.add("cycles_output_summary", outputs))
            b.add("cycles_fertilizer_increase_output_summary", parsed)
        b.add("cycles_plots", summaries)


def _genome(b: _Builder, n: int, seed: int) -> None:
    chromosomes = max(1, min(22, round(n / 41)))
    individuals = max(1, round(n / chromosomes - 16))  # n = chromosomes * (individuals + 16)
    for _ in range(chromosomes):
        merged = b.add("individuals_merge", [b.add("individuals") for _ in range(individuals)])
        sifted = b.add("sifting")
        for _population in ("AFR", "AMR", "EAS", "EUR", "GBR", "SAS", "ALL"):
            b.add("mutation_overlap", (merged, sifted))
            b.add("frequency", (merged, sifted))


_BUILDERS: dict[str, Callable[[_Builder, int, int], None]] = {
    "montage": _montage,
    "epigenomics": _epigenomics,
    "cycles": _cycles,
    "genome": _genome,
}


def workflow(recipe: str, tasks: int, seed: int = 0) -> list[WfTask]:
    """About ``tasks`` tasks shaped like the WfCommons ``recipe`` (one of :data:`RECIPES`), in
    topological order; the recipe's structure decides the exact count."""
    if recipe not in _BUILDERS:
        raise ValueError(f"unknown recipe {recipe!r}; expected one of {', '.join(RECIPES)}")
    if tasks < 1:
        raise ValueError(f"tasks must be positive, got {tasks}")
    builder = _Builder(recipe, seed)
    _BUILDERS[recipe](builder, tasks, seed)
    return builder.tasks
