"""Topic-model metrics: top words, diversity, purity, NMI, gensim coherence."""

from __future__ import annotations

import math

import numpy as np
import pytest

from posttrain.topics.metrics import coherence_per_topic, nmi, purity, top_words, topic_diversity, topic_metrics

# -- top words --------------------------------------------------------------------------------------


def test_top_words_most_probable_first():
    vocab = ["a", "b", "c", "d"]
    beta = np.array([[0.1, 0.4, 0.3, 0.2], [0.7, 0.0, 0.1, 0.2]])
    assert top_words(beta, vocab, 3) == [["b", "c", "d"], ["a", "d", "c"]]
    assert top_words(beta, vocab, 1) == [["b"], ["a"]]
    assert top_words(beta, vocab, 4) == [["b", "c", "d", "a"], ["a", "d", "c", "b"]]


def test_top_words_ties_keep_vocabulary_order():
    vocab = ["a", "b", "c", "d", "e"]
    beta = np.array([[0.1, 0.3, 0.1, 0.3, 0.2], [0.2, 0.2, 0.2, 0.2, 0.2]], dtype=np.float32)
    assert top_words(beta, vocab, 5) == [["b", "d", "e", "a", "c"], ["a", "b", "c", "d", "e"]]


def test_top_words_ties_keep_vocabulary_order_in_a_long_row():
    # many ties among 300 words (sorting long rows is where an unstable sort shows)
    vocab = [f"w{j:03d}" for j in range(300)]
    beta = np.random.default_rng(0).integers(0, 3, size=(3, 300)).astype(np.float32)
    topics = top_words(beta, vocab, 50)
    for row, words in zip(beta, topics):
        expected = [vocab[j] for j in sorted(range(300), key=lambda j: (-row[j], j))[:50]]
        assert words == expected


# -- topic diversity --------------------------------------------------------------------------------


def test_topic_diversity_by_hand():
    assert topic_diversity([["a", "b", "c"], ["c", "d", "e"]]) == pytest.approx(5 / 6)
    assert topic_diversity([["a", "b"], ["c", "d"]]) == 1.0
    assert topic_diversity([["a", "b"], ["a", "b"], ["a", "b"]]) == pytest.approx(2 / 6)


# -- purity and NMI ---------------------------------------------------------------------------------


def test_purity_by_hand():
    # cluster 5 holds labels 0, 0, 1 (majority 2); cluster 7 holds 1, 1 (majority 2)
    assert purity([0, 0, 1, 1, 1], [5, 5, 5, 7, 7]) == pytest.approx((2 + 2) / 5)


def test_purity_of_perfect_and_single_clusterings():
    assert purity([0, 0, 1, 2], [3, 3, 9, 4]) == 1.0
    assert purity([0, 0, 1, 2], [1, 1, 1, 1]) == pytest.approx(2 / 4)
    assert purity([0, 1, 2, 3], [0, 1, 2, 3]) == 1.0


def test_nmi_identical_partitions_up_to_renaming():
    assert nmi([0, 0, 1, 1, 2, 2], [7, 7, 3, 3, 9, 9]) == pytest.approx(1.0)


def test_nmi_independent_partitions_is_zero():
    assert nmi([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-9)
    assert nmi([0, 0, 0, 1, 1, 1], [4, 5, 6, 4, 5, 6]) == pytest.approx(0.0, abs=1e-9)


def test_nmi_is_a_float_between_zero_and_one():
    value = nmi([0, 0, 1, 1, 1], [5, 5, 5, 7, 7])
    assert isinstance(value, float)
    assert 0.0 < value < 1.0


# -- coherence --------------------------------------------------------------------------------------

# "apple banana cherry" always occur together; "dog engine forest" never share a document
REFERENCE = (
    [["apple", "banana", "cherry", "filler"] for _ in range(6)]
    + [["dog", "filler"], ["engine", "filler"], ["forest", "filler"]] * 2
    + [["filler", "other"], ["other", "thing"], ["thing"]]
)
TOGETHER = ["apple", "banana", "cherry"]
APART = ["dog", "engine", "forest"]


def test_coherence_per_topic_one_float_per_topic():
    for measure in ("c_v", "c_npmi"):
        values = coherence_per_topic([TOGETHER, APART, ["filler", "other", "thing"]], REFERENCE, measure)
        assert len(values) == 3
        assert all(isinstance(v, float) and math.isfinite(v) for v in values)


def test_words_that_always_co_occur_are_more_coherent():
    c_v = coherence_per_topic([TOGETHER, APART], REFERENCE, "c_v")
    npmi = coherence_per_topic([TOGETHER, APART], REFERENCE, "c_npmi")
    assert c_v[0] > c_v[1]
    assert npmi[0] > npmi[1]
    # NPMI of words that always occur together is 1, of words that never do near -1
    assert npmi[0] == pytest.approx(1.0, abs=1e-6)
    assert npmi[1] < -0.5


def test_coherence_does_not_depend_on_the_other_topics():
    alone = coherence_per_topic([TOGETHER], REFERENCE, "c_npmi")
    together = coherence_per_topic([APART, TOGETHER], REFERENCE, "c_npmi")
    assert alone[0] == pytest.approx(together[1])


def test_topic_metrics_keys_and_means():
    topics_10 = [TOGETHER, APART]
    topics_25 = [TOGETHER + ["filler"], APART + ["filler"]]
    metrics = topic_metrics(topics_10, topics_25, REFERENCE)
    assert set(metrics) == {"td", "c_v", "npmi", "c_v_per_topic", "npmi_per_topic"}
    assert metrics["td"] == pytest.approx(7 / 8)  # TD on the top-25 lists
    assert len(metrics["c_v_per_topic"]) == len(metrics["npmi_per_topic"]) == 2
    assert metrics["c_v"] == pytest.approx(float(np.mean(metrics["c_v_per_topic"])))
    assert metrics["npmi"] == pytest.approx(float(np.mean(metrics["npmi_per_topic"])))
    assert metrics["npmi_per_topic"] == pytest.approx(coherence_per_topic(topics_10, REFERENCE, "c_npmi"))
    assert all(isinstance(metrics[k], float) for k in ("td", "c_v", "npmi"))
