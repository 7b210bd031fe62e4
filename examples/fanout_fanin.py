"""Fan-out / fan-in, twice.

One root task (``generate``) makes a list of integers. Stage 1 fans out to `parts` parallel
chains of three tasks each (``pick`` a slice → ``transform`` it → ``summarize`` it), and a
fan-in (``combine``, which takes a list of nodes) merges the summaries into global stats.
Stage 2 fans out again: each ``score`` task needs both its stage-1 chunk and the global
stats (two upstreams: a chance for locality), and a last fan-in (``report``) collects them.
All arithmetic is on integers, so the result is exact.
"""

import random

import shoal


@shoal.task
def generate(n, seed):
    rng = random.Random(seed)
    return [rng.randrange(1000) for _ in range(n)]


@shoal.task
def pick(data, i, parts):
    """The i-th of `parts` interleaved slices of data."""
    return data[i::parts]


@shoal.task
def transform(xs):
    return [x * x % 9973 for x in xs]


@shoal.task
def summarize(xs):
    return {"count": len(xs), "total": sum(xs), "max": max(xs)}


@shoal.task
def combine(summaries):
    return {
        "count": sum(s["count"] for s in summaries),
        "total": sum(s["total"] for s in summaries),
        "max": max(s["max"] for s in summaries),
    }


@shoal.task
def score(xs, stats):
    """How many values exceed the global mean, and their summed squared deviation (×count²)."""
    n, t = stats["count"], stats["total"]
    return {"above_mean": sum(x * n > t for x in xs), "sq_dev": sum((x * n - t) ** 2 for x in xs)}


@shoal.task
def report(stats, scores):
    n = stats["count"]
    sq_dev = sum(s["sq_dev"] for s in scores)
    return {
        **stats,
        "above_mean": sum(s["above_mean"] for s in scores),
        "above_mean_per_part": [s["above_mean"] for s in scores],
        "variance": sq_dev / n**3,
    }


def build(n=20_000, parts=8, seed=42):
    data = generate(n, seed)
    chunks = [transform(pick(data, i, parts)) for i in range(parts)]
    stats = combine([summarize(c) for c in chunks])
    return report(stats, [score(c, stats) for c in chunks])


def reference(n=20_000, parts=8, seed=42):
    data = generate.func(n, seed)
    chunks = [transform.func(pick.func(data, i, parts)) for i in range(parts)]
    stats = combine.func([summarize.func(c) for c in chunks])
    return report.func(stats, [score.func(c, stats) for c in chunks])


def main():
    result = build().compute()
    for key, value in result.items():
        print(f"{key:>20}: {value}")
    print(shoal.last_run())


if __name__ == "__main__":
    main()
