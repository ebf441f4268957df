"""Word preferences per topic (resumable JSONL), the topic filter and the (topic, winner, loser) triples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from posttrain.errors import DataError
from posttrain.topics.judges import TopicRating, WordChoice
from posttrain.topics.preferences import TOPIC_FILTERS, build_preferences, preference_triples, read_preferences, select_topics

ROW_KEYS = {"topic", "score", "description", "top_words", "candidates", "w_win", "w_lose", "reasons"}

TOP_15 = [
    ["bank", "money", "market", "said", "stock"],
    ["team", "match", "goal", "year", "win"],
    ["film", "star", "award", "people", "show"],
]
TOP_10 = [words[:3] for words in TOP_15]


class FakeJudge:
    """Scores topic k as 1 + k % 3, describes it by its first word; proposes '<last word of the
    description>-cand<i>' candidates (minus the excluded ones); picks the first two top words and
    the first candidate as winners and the last top word as the loser. Records every call."""

    def __init__(self, fail_on: str | None = None):
        self.rated: list[tuple] = []
        self.candidate_calls: list[tuple] = []
        self.chosen: list[tuple] = []
        self.fail_on = fail_on

    def rate(self, words, other_descriptions=()):
        if words[0] == self.fail_on:
            raise RuntimeError("judge crashed")
        self.rated.append(list(words))
        self.other_descriptions = list(other_descriptions)
        k = next(i for i, top in enumerate(TOP_10) if top == words)
        return TopicRating(1 + k % 3, f"about {words[0]}")

    def candidates(self, words, description, n, exclude):
        self.candidate_calls.append((list(words), description, n, set(exclude)))
        word = description.split()[-1]
        return [w for w in [word, *(f"{word}-cand{i}" for i in range(10))] if w not in exclude][:n]

    def choose(self, words, candidates, description):
        self.chosen.append((list(words), list(candidates), description))
        winners, losers = words[:2] + candidates[:1], words[-1:]
        return WordChoice(winners, losers, {w: "fits" for w in winners} | {w: "odd one out" for w in losers})


def rows_of(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- build_preferences ------------------------------------------------------------------------------


def test_build_preferences_writes_one_row_per_topic(tmp_path):
    path = tmp_path / "prefs" / "preferences.jsonl"
    judge = FakeJudge()
    result = build_preferences(path, TOP_10, TOP_15, judge, num_candidates=2)

    rows = rows_of(path)
    assert [row["topic"] for row in rows] == [0, 1, 2]
    assert all(set(row) == ROW_KEYS for row in rows)
    assert rows[0] == {
        "topic": 0, "score": 1, "description": "about bank", "top_words": TOP_15[0],
        "candidates": ["bank-cand0", "bank-cand1"],  # 'bank' itself is a top word: excluded
        "w_win": ["bank", "money", "bank-cand0"], "w_lose": ["stock"],
        "reasons": {"bank": "fits", "money": "fits", "bank-cand0": "fits", "stock": "odd one out"},
    }
    assert [row["score"] for row in rows] == [1, 2, 3]
    assert result == {row["topic"]: row for row in rows}


def test_build_preferences_asks_the_judge_the_right_questions(tmp_path):
    judge = FakeJudge()
    build_preferences(tmp_path / "p.jsonl", TOP_10, TOP_15, judge, num_candidates=3)
    assert judge.rated == TOP_10  # rated on the top-10 words
    # candidates for the top-15 and the description, never one of its top-15 words nor a word in
    # another topic's top 10
    others = [{w for j in range(3) if j != k for w in TOP_10[j]} for k in range(3)]
    assert judge.candidate_calls == [(TOP_15[k], f"about {TOP_15[k][0]}", 3, set(TOP_15[k]) | others[k]) for k in range(3)]
    # the last topic was rated knowing the earlier topics' descriptions
    assert judge.other_descriptions == ["about bank", "about team"]
    for k, (words, candidates, description) in enumerate(judge.chosen):
        assert words == TOP_15[k]  # chosen among the top-15 words
        assert candidates == [f"{TOP_15[k][0]}-cand{i}" for i in range(3)]
        assert description == f"about {TOP_15[k][0]}"


def test_rerun_does_not_judge_topics_already_in_the_file(tmp_path):
    path = tmp_path / "p.jsonl"
    first = build_preferences(path, TOP_10, TOP_15, FakeJudge())
    judge = FakeJudge()
    again = build_preferences(path, TOP_10, TOP_15, judge)
    assert judge.rated == [] and judge.chosen == [] and judge.candidate_calls == []
    assert again == first
    assert len(rows_of(path)) == 3


def test_rerun_completes_only_the_missing_topics(tmp_path):
    path = tmp_path / "p.jsonl"
    kept = {"topic": 1, "score": 3, "description": "from an earlier run", "top_words": TOP_15[1], "candidates": [],
            "w_win": ["team"], "w_lose": ["year"]}
    path.write_text(json.dumps(kept) + "\n", encoding="utf-8")
    judge = FakeJudge()
    result = build_preferences(path, TOP_10, TOP_15, judge)
    assert judge.rated == [TOP_10[0], TOP_10[2]]
    assert result[1] == kept  # the earlier row is kept as it was
    assert sorted(result) == [0, 1, 2]
    assert [row["topic"] for row in rows_of(path)] == [1, 0, 2]


def test_rerun_after_a_crash_resumes_where_it_stopped(tmp_path):
    path = tmp_path / "p.jsonl"
    with pytest.raises(RuntimeError, match="judge crashed"):
        build_preferences(path, TOP_10, TOP_15, FakeJudge(fail_on="team"))
    assert [row["topic"] for row in rows_of(path)] == [0]  # topic 0 was saved before the crash
    judge = FakeJudge()
    result = build_preferences(path, TOP_10, TOP_15, judge)
    assert judge.rated == [TOP_10[1], TOP_10[2]]
    assert sorted(result) == [0, 1, 2]


def test_torn_last_line_is_ignored_and_redone(tmp_path):
    path = tmp_path / "p.jsonl"
    build_preferences(path, TOP_10[:1], TOP_15[:1], FakeJudge())
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"topic": 1, "score": 2, "descr')  # a killed writer: no newline, not JSON
    assert sorted(read_preferences(path)) == [0]
    judge = FakeJudge()
    result = build_preferences(path, TOP_10, TOP_15, judge)
    assert judge.rated == [TOP_10[1], TOP_10[2]]
    assert sorted(result) == [0, 1, 2]
    rows = rows_of(path)  # every line parses: the torn tail is gone
    assert [row["topic"] for row in rows] == [0, 1, 2]


def test_build_preferences_with_no_topics_writes_nothing(tmp_path):
    path = tmp_path / "p.jsonl"
    assert build_preferences(path, [], [], FakeJudge()) == {}
    assert not path.exists()


# -- read_preferences -------------------------------------------------------------------------------


def write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_read_preferences_of_a_missing_file_is_empty(tmp_path):
    assert read_preferences(tmp_path / "absent.jsonl") == {}


def test_read_preferences_accepts_w_loose(tmp_path):
    path = write_rows(tmp_path / "p.jsonl", [{"topic": 4, "score": 2, "w_win": ["a"], "w_loose": ["b", "c"]}])
    rows = read_preferences(path)
    assert list(rows) == [4]
    assert rows[4]["w_lose"] == ["b", "c"]
    assert "w_loose" not in rows[4]


def test_read_preferences_prefers_w_lose_over_w_loose(tmp_path):
    path = write_rows(tmp_path / "p.jsonl", [{"topic": 0, "score": 2, "w_win": ["a"], "w_lose": ["b"], "w_loose": ["c"]}])
    assert read_preferences(path)[0]["w_lose"] == ["b"]


@pytest.mark.parametrize("row, field", [
    ({"topic": 0, "score": 2, "w_win": "a", "w_lose": []}, "w_win"),
    ({"topic": 0, "score": 2, "w_lose": []}, "w_win"),
    ({"topic": 0, "score": 2, "w_win": [], "w_lose": None}, "w_lose"),
    ({"topic": 0, "score": 2, "w_win": []}, "w_lose"),
])
def test_read_preferences_word_lists_must_be_lists(tmp_path, row, field):
    path = write_rows(tmp_path / "p.jsonl", [{"topic": 1, "score": 3, "w_win": [], "w_lose": []}, row])
    with pytest.raises(DataError, match=rf"p\.jsonl:2: field '{field}'"):
        read_preferences(path)


@pytest.mark.parametrize("row", [{"topic": "0", "score": 2, "w_win": [], "w_lose": []}, {"topic": 0, "w_win": [], "w_lose": []}])
def test_read_preferences_needs_an_integer_topic_and_score(tmp_path, row):
    with pytest.raises(DataError, match=r"p\.jsonl:1"):
        read_preferences(write_rows(tmp_path / "p.jsonl", [row]))


def test_read_preferences_bad_line_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"topic": 0, "score": 2, "w_win": [], "w_lose": []}\n{"topic": 1, "sc\n'
                    '{"topic": 2, "score": 2, "w_win": [], "w_lose": []}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"p\.jsonl:2"):
        read_preferences(path)


# -- select_topics ----------------------------------------------------------------------------------

C_V = [0.5, 0.2, 0.8, 0.3]  # mean 0.45: topics 1 and 3 are below it
PREFS = {0: {"score": 2}, 1: {"score": 3}, 2: {"score": 3}, 3: {"score": 1}}  # scores below 3: topics 0 and 3


@pytest.mark.parametrize("topic_filter, expected", [
    ("cv_below_avg", [1, 3]),
    ("llm_score", [0, 3]),
    ("either", [0, 1, 3]),
    ("all", [0, 1, 2, 3]),
])
def test_select_topics(topic_filter, expected):
    assert select_topics(topic_filter, C_V, PREFS) == expected


def test_select_topics_covers_every_filter():
    assert set(TOPIC_FILTERS) == {"cv_below_avg", "llm_score", "either", "all"}


def test_select_topics_at_the_mean_is_not_below_it():
    # values exact in binary: the mean is exactly 0.5, and topics at 0.5 are not below it
    assert select_topics("cv_below_avg", [0.5, 0.5, 0.25, 0.75], {}) == [2]


def test_equally_coherent_topics_are_not_below_the_mean():
    assert select_topics("cv_below_avg", [0.4, 0.4, 0.4], {}) == []
    assert select_topics("either", [0.4, 0.4, 0.4], {0: {"score": 3}, 1: {"score": 3}, 2: {"score": 3}}) == []


def test_select_topics_llm_score_only_knows_judged_topics():
    assert select_topics("llm_score", C_V, {2: {"score": 1}}) == [2]
    assert select_topics("llm_score", C_V, {}) == []
    assert select_topics("all", C_V, {}) == [0, 1, 2, 3]


def test_unknown_topic_filter_is_a_value_error():
    with pytest.raises(ValueError, match="unknown topic filter 'cv_above_avg'"):
        select_topics("cv_above_avg", C_V, PREFS)


# -- preference_triples -----------------------------------------------------------------------------

VOCAB = ["a", "b", "c", "d", "e"]


def test_preference_triples_are_all_winner_loser_combinations_of_the_chosen_topics():
    prefs = {
        0: {"w_win": ["a", "b"], "w_lose": ["c", "e"]},
        1: {"w_win": ["d"], "w_lose": ["a"]},
        2: {"w_win": ["e"], "w_lose": ["b"]},  # not chosen
    }
    triples, ignored = preference_triples(prefs, [0, 1], VOCAB)
    assert triples.dtype == np.int64
    assert triples.shape == (5, 3)
    assert sorted(map(tuple, triples.tolist())) == [(0, 0, 2), (0, 0, 4), (0, 1, 2), (0, 1, 4), (1, 3, 0)]
    assert ignored == 0


def test_preference_triples_skip_a_winner_that_is_also_a_loser():
    prefs = {3: {"w_win": ["a", "d"], "w_lose": ["d", "e"]}}
    triples, _ = preference_triples(prefs, [3], VOCAB)
    assert sorted(map(tuple, triples.tolist())) == [(3, 0, 3), (3, 0, 4), (3, 3, 4)]


def test_preference_triples_ignore_and_count_words_outside_the_vocabulary():
    prefs = {0: {"w_win": ["a", "zebra"], "w_lose": ["b", "yak", "xylophone"]}, 1: {"w_win": ["nope"], "w_lose": ["c"]}}
    triples, ignored = preference_triples(prefs, [0, 1], VOCAB)
    assert triples.tolist() == [[0, 0, 1]]  # topic 1 has no winner left
    assert ignored == 4


def test_preference_triples_words_of_unchosen_topics_are_not_counted():
    prefs = {0: {"w_win": ["a"], "w_lose": ["b"]}, 1: {"w_win": ["zebra"], "w_lose": ["yak"]}}
    triples, ignored = preference_triples(prefs, [0], VOCAB)
    assert triples.tolist() == [[0, 0, 1]]
    assert ignored == 0


def test_preference_triples_of_nothing_have_three_columns():
    triples, ignored = preference_triples({0: {"w_win": ["a"], "w_lose": []}}, [0, 5], VOCAB)
    assert triples.shape == (0, 3)
    assert ignored == 0
    triples, _ = preference_triples({}, [], VOCAB)
    assert triples.shape == (0, 3)


def test_candidates_avoid_the_words_other_topics_hold_in_the_given_lists(tmp_path):
    judge = FakeJudge()
    build_preferences(tmp_path / "p.jsonl", TOP_10, TOP_15, judge, held_lists=TOP_15)
    others = [{w for j in range(3) if j != k for w in TOP_15[j]} for k in range(3)]
    assert [call[3] for call in judge.candidate_calls] == [set(TOP_15[k]) | others[k] for k in range(3)]
