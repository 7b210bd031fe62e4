"""Per-chapter statistics of the Book of Genesis, with a map whose width only the text knows.

``split_chapters`` finds the chapters (50 of them, which nobody tells the program), and
``chapter_stats.map`` runs one task per chapter: the worker that split the text expands
the map. ``longest`` then reads the list of results, in chapter order. Run it with
``shoal run examples/chapters.py`` or ``python examples/chapters.py``.
"""

import re
from pathlib import Path

import shoal

TEXT = Path(__file__).resolve().parent / "data" / "genesis_kjv.txt"
HEADING = re.compile(r"^Genesis (\d+)$", re.MULTILINE)
WORD = re.compile(r"[a-z']+")


@shoal.task
def split_chapters(text):
    """The chapters, in order: (number, text) for each 'Genesis N' heading."""
    marks = list(HEADING.finditer(text))
    ends = [m.start() for m in marks[1:]] + [len(text)]
    return [(int(m.group(1)), text[m.end() : end]) for m, end in zip(marks, ends, strict=True)]


@shoal.task
def chapter_stats(chapter, word="god"):
    """One chapter's number, its words, and how often ``word`` occurs in it."""
    number, body = chapter
    words = WORD.findall(body.lower())
    return number, len(words), words.count(word)


@shoal.task
def longest(stats, n):
    """The n longest chapters (number, words, mentions), longest first."""
    return sorted(stats, key=lambda s: (-s[1], s[0]))[:n]


def build(n=5, word="god", path=TEXT):
    text = Path(path).read_text(encoding="utf-8")
    return longest(chapter_stats.map(split_chapters(text), word=word), n)


def reference(n=5, word="god", path=TEXT):
    text = Path(path).read_text(encoding="utf-8")
    stats = [chapter_stats.func(c, word) for c in split_chapters.func(text)]
    return longest.func(stats, n)


def main():
    for number, words, mentions in build().compute():
        print(f"chapter {number:2d}: {words:5d} words, 'god' {mentions} times")
    print(shoal.last_run())


if __name__ == "__main__":
    main()
