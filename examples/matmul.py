"""Blocked matrix multiply C = A @ B with NumPy.

A and B (n×n, seeded random) are cut into k×k blocks. For each output block C[i][j] the
graph has k ``block_mul`` tasks (A[i][l] @ B[l][j]) whose partial products are summed by a
chain of ``add_blocks`` tasks; one ``assemble`` task receives the k×k nested list of block
nodes (nodes nested inside a list-of-lists argument) and joins them with ``np.block``.
"""

import numpy as np

import shoal


@shoal.task
def block_mul(a, b):
    return a @ b


@shoal.task
def add_blocks(x, y):
    return x + y


@shoal.task
def assemble(blocks):
    return np.block(blocks)


def make_inputs(n, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, n)), rng.standard_normal((n, n))


def split(m, k):
    """k×k grid of blocks of m (n must be divisible by k)."""
    return [np.hsplit(row, k) for row in np.vsplit(m, k)]


def build(n=256, k=4, seed=0):
    a, b = make_inputs(n, seed)
    ab, bb = split(a, k), split(b, k)
    grid = []
    for i in range(k):
        row = []
        for j in range(k):
            acc = block_mul(ab[i][0], bb[0][j])
            for m in range(1, k):
                acc = add_blocks(acc, block_mul(ab[i][m], bb[m][j]))
            row.append(acc)
        grid.append(row)
    return assemble(grid)


def reference(n=256, k=4, seed=0):
    a, b = make_inputs(n, seed)
    ab, bb = split(a, k), split(b, k)
    grid = []
    for i in range(k):
        row = []
        for j in range(k):
            acc = block_mul.func(ab[i][0], bb[0][j])
            for m in range(1, k):
                acc = add_blocks.func(acc, block_mul.func(ab[i][m], bb[m][j]))
            row.append(acc)
        grid.append(row)
    return assemble.func(grid)


def main():
    n, k, seed = 256, 4, 0
    c = build(n, k, seed).compute()
    a, b = make_inputs(n, seed)
    err = float(np.max(np.abs(c - a @ b)))
    print(
        f"C = A @ B: shape {c.shape}, {k}x{k} blocks, trace {np.trace(c):.6f}, "
        f"max |C - A@B| = {err:.2e}"
    )
    print(shoal.last_run())


if __name__ == "__main__":
    main()
