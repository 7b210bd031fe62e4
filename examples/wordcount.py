"""Map/reduce word count over the Book of Genesis (KJV, public domain; see data/README.md).

Shows the classic map/reduce shape: the text is split into chunks, one ``count_words``
task per chunk (map), the per-chunk Counters are merged pairwise in a tree of
``merge_counts`` tasks (reduce), and one ``top_words`` task returns the N most frequent
words. Run it with ``shoal run examples/wordcount.py`` or ``python examples/wordcount.py``.
"""

import re
from collections import Counter
from pathlib import Path

import shoal

TEXT = Path(__file__).resolve().parent / "data" / "genesis_kjv.txt"
WORD = re.compile(r"[a-z']+")


@shoal.task
def count_words(chunk):
    """Map: word frequencies of one chunk (lowercased, words = [a-z']+)."""
    return Counter(WORD.findall(chunk.lower()))


@shoal.task
def merge_counts(a, b):
    """Reduce: merge two partial counts."""
    return a + b


@shoal.task
def top_words(counts, n):
    """The n most frequent words, ties broken alphabetically (deterministic)."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def split_text(text, chunks):
    """Split text into about `chunks` pieces at line boundaries."""
    lines = text.splitlines(keepends=True)
    size = -(-len(lines) // chunks)
    return ["".join(lines[i : i + size]) for i in range(0, len(lines), size)]


def tree_reduce(nodes, combine):
    """Combine a list pairwise, level by level, into one node (depth log2(len))."""
    while len(nodes) > 1:
        pairs = [combine(nodes[i], nodes[i + 1]) for i in range(0, len(nodes) - 1, 2)]
        nodes = pairs + nodes[len(nodes) - len(nodes) % 2 :]
    return nodes[0]


def build(chunks=16, n=10, path=TEXT):
    text = Path(path).read_text(encoding="utf-8")
    counts = [count_words(c) for c in split_text(text, chunks)]
    return top_words(tree_reduce(counts, merge_counts), n)


def reference(chunks=16, n=10, path=TEXT):
    text = Path(path).read_text(encoding="utf-8")
    total = Counter()
    for c in split_text(text, chunks):
        total = merge_counts.func(total, count_words.func(c))
    return top_words.func(total, n)


def main():
    top = build().compute()
    for rank, (word, count) in enumerate(top, 1):
        print(f"{rank:2d}. {word:<10} {count}")
    print(shoal.last_run())


if __name__ == "__main__":
    main()
