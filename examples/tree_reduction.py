"""Pairwise tree reduction: the sum of squares 0² + 1² + … + (n-1)² over 1024 leaf tasks.

Shows a wide, deep-ish graph of tiny tasks: n ``square`` leaves, then n-1 ``add`` tasks
arranged as a balanced binary tree (depth log2(n) = 10 for n = 1024). It measures the
engine's per-task overhead more than any computation.
"""

import shoal


@shoal.task
def square(i):
    return i * i


@shoal.task
def add(a, b):
    return a + b


def tree_reduce(nodes, combine):
    """Combine a list pairwise, level by level, into one node."""
    while len(nodes) > 1:
        pairs = [combine(nodes[i], nodes[i + 1]) for i in range(0, len(nodes) - 1, 2)]
        nodes = pairs + nodes[len(nodes) - len(nodes) % 2 :]
    return nodes[0]


def build(n=1024):
    return tree_reduce([square(i) for i in range(n)], add)


def reference(n=1024):
    total = 0
    for i in range(n):
        total = add.func(total, square.func(i))
    return total


def main():
    n = 1024
    total = build(n).compute()
    print(f"sum of squares of 0..{n - 1} = {total} (closed form {(n - 1) * n * (2 * n - 1) // 6})")
    print(shoal.last_run())


if __name__ == "__main__":
    main()
