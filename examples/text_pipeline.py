"""A multi-stage text-analysis pipeline over the Book of Genesis (KJV, see data/README.md).

The text is cut into groups of chapters; each group flows through its own chain of tasks,
normalize → split into sentences → tokenize → per-chunk stats (word lengths, bigrams,
sentence lengths); then ``merge`` receives a *dict* of stat nodes keyed by chapter range
(nodes nested inside a dict argument) and ``make_report`` turns the merge into a report dict.
"""

import re
from collections import Counter
from itertools import pairwise
from pathlib import Path

import shoal

TEXT = Path(__file__).resolve().parent / "data" / "genesis_kjv.txt"
WORD = re.compile(r"[a-z']+")
HEADING = re.compile(r"^Genesis (\d+)$", re.MULTILINE)


@shoal.task
def normalize(text):
    """Drop chapter headings and verse numbers, lowercase, collapse whitespace."""
    text = HEADING.sub(" ", text)
    text = re.sub(r"(?m)^\s*\d+\s", " ", text)
    return " ".join(text.lower().split())


@shoal.task
def split_sentences(text):
    return [s for s in re.split(r"(?<=[.?!])\s+", text) if s]


@shoal.task
def tokenize(sentences):
    return [WORD.findall(s) for s in sentences]


@shoal.task
def chunk_stats(sentences):
    bigrams = Counter()
    for words in sentences:
        bigrams.update(pairwise(words))
    return {
        "sentences": len(sentences),
        "tokens": sum(len(w) for w in sentences),
        "longest_sentence": max(len(w) for w in sentences),
        "word_lengths": Counter(len(t) for w in sentences for t in w),
        "bigrams": bigrams,
    }


@shoal.task
def merge(stats_by_chunk):
    merged = {"word_lengths": Counter(), "bigrams": Counter(), "per_chunk": {}}
    for label, s in stats_by_chunk.items():
        merged["word_lengths"] += s["word_lengths"]
        merged["bigrams"] += s["bigrams"]
        merged["per_chunk"][label] = {k: s[k] for k in ("sentences", "tokens", "longest_sentence")}
    return merged


@shoal.task
def make_report(merged, top):
    per_chunk = merged["per_chunk"]
    lengths = merged["word_lengths"]
    tokens = sum(c["tokens"] for c in per_chunk.values())
    sentences = sum(c["sentences"] for c in per_chunk.values())
    bigrams = sorted(merged["bigrams"].items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return {
        "sentences": sentences,
        "tokens": tokens,
        "mean_words_per_sentence": round(tokens / sentences, 3),
        "mean_word_length": round(sum(n * c for n, c in lengths.items()) / tokens, 3),
        "word_length_histogram": dict(sorted(lengths.items())),
        "top_bigrams": [(" ".join(b), c) for b, c in bigrams],
        "per_chunk": per_chunk,
    }


def chapter_groups(text, per_group):
    """{'1-5': text of chapters 1..5, ...}: cut at the 'Genesis N' headings."""
    starts = [m.start() for m in HEADING.finditer(text)] + [len(text)]
    chapters = [text[a:b] for a, b in pairwise(starts)]
    return {
        f"{i + 1}-{min(i + per_group, len(chapters))}": "".join(chapters[i : i + per_group])
        for i in range(0, len(chapters), per_group)
    }


def build(per_group=5, top=10, path=TEXT):
    groups = chapter_groups(Path(path).read_text(encoding="utf-8"), per_group)
    stats = {
        label: chunk_stats(tokenize(split_sentences(normalize(text))))
        for label, text in groups.items()
    }
    return make_report(merge(stats), top)


def reference(per_group=5, top=10, path=TEXT):
    groups = chapter_groups(Path(path).read_text(encoding="utf-8"), per_group)
    stats = {
        label: chunk_stats.func(tokenize.func(split_sentences.func(normalize.func(text))))
        for label, text in groups.items()
    }
    return make_report.func(merge.func(stats), top)


def main():
    report = build().compute()
    for key, value in report.items():
        if key != "per_chunk":
            print(f"{key}: {value}")
    for label, c in report["per_chunk"].items():
        print(f"  chapters {label:>6}: {c}")
    print(shoal.last_run())


if __name__ == "__main__":
    main()
