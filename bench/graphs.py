"""Graph shapes. Each builder takes a ``delayed``-like decorator (``shoal.task`` or
``dask.delayed(pure=False)``) and a size, and returns ``(sink, n_tasks, expected_result)``,
so every engine runs the identical graph. Task functions are module level (picklable by
reference) and do no work beyond an addition."""


def _ident(x):
    return x


def _inc(x):
    return x + 1


def _add(a, b):
    return a + b


def _total(xs):
    return sum(xs)


def chain(delayed, n):
    """n tasks, each taking the previous task's output."""
    inc = delayed(_inc)
    x = inc(0)
    for _ in range(n - 1):
        x = inc(x)
    return x, n, n


def tree(delayed, n):
    """Binary tree reduction: ceil(n/2) leaves with an int argument, summed pairwise."""
    leaf, add = delayed(_ident), delayed(_add)
    leaves = (n + 1) // 2
    level = [leaf(i) for i in range(leaves)]
    while len(level) > 1:
        nxt = [add(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0], 2 * leaves - 1, leaves * (leaves - 1) // 2


def fan(delayed, n):
    """Fan-out/fan-in: one root, n-2 children, one sink taking the list of all children."""
    root, add, total = delayed(_ident), delayed(_add), delayed(_total)
    r = root(0)
    children = [add(r, i) for i in range(n - 2)]
    k = n - 2
    return total(children), n, k * (k - 1) // 2


def tree1024(delayed, n=None):
    """``tree`` with 1 024 leaves (2 047 tasks) whatever the size asked for."""
    return tree(delayed, 2047)


SHAPES = {"chain": chain, "tree": tree, "fan": fan, "tree1024": tree1024}
FIXED_SIZE = {"tree1024"}  # shapes that ignore --size (the warm-up runs them only if alone)
