"""Topic judges: word embeddings (fake encoder), the embedding and coherence judges by hand, and the
OpenAI judge against a local chat-completions server that answers with function calls."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from posttrain.errors import PosttrainError
from posttrain.judges.openai import OpenAIJudge
from posttrain.topics.judges import (
    CHOOSE_FUNCTION,
    RATE_FUNCTION,
    CoherenceTopicJudge,
    DocumentCooccurrence,
    EmbeddingTopicJudge,
    OpenAITopicJudge,
    TopicRating,
    WordChoice,
    WordEmbeddings,
)


def polar(degrees: float, length: float = 1.0) -> list[float]:
    return [length * math.cos(math.radians(degrees)), length * math.sin(math.radians(degrees))]


class FakeEncoder:
    """Encodes each text to a fixed vector (not unit length); records its calls."""

    def __init__(self, table: dict[str, list[float]]):
        self.table = table
        self.calls: list[tuple] = []

    def encode(self, texts, batch_size=32, show_progress_bar=True):
        self.calls.append((list(texts), batch_size, show_progress_bar))
        return np.array([self.table[t] for t in texts], dtype=np.float64)


# -- WordEmbeddings ---------------------------------------------------------------------------------

TABLE = {
    "cat": [3.0, 0.0, 0.0],
    "dog": [2.0, 2.0, 0.0],
    "car": [0.0, 0.0, 5.0],
    "bus": [0.0, 1.0, 1.0],
    "pets": [1.0, 0.1, 0.0],  # a description, not a vocabulary word
    "zero": [0.0, 0.0, 0.0],
}
VOCAB = ["cat", "dog", "car", "bus"]


def test_word_embeddings_are_unit_length():
    encoder = FakeEncoder(TABLE)
    embeddings = WordEmbeddings(VOCAB, encoder=encoder, batch_size=7)
    assert embeddings.vectors.shape == (4, 3)
    assert embeddings.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings.vectors, axis=1), 1.0, rtol=1e-6)
    h = 1 / math.sqrt(2)
    np.testing.assert_allclose(embeddings.vectors, [[1, 0, 0], [h, h, 0], [0, 0, 1], [0, h, h]], rtol=1e-6, atol=1e-7)
    assert encoder.calls == [(VOCAB, 7, False)]  # the vocabulary, in one call, without a progress bar


def test_word_embeddings_of_returns_rows_in_the_order_asked():
    embeddings = WordEmbeddings(VOCAB, encoder=FakeEncoder(TABLE))
    h = 1 / math.sqrt(2)
    np.testing.assert_allclose(embeddings.of(["car", "cat", "car"]), [[0, 0, 1], [1, 0, 0], [0, 0, 1]], atol=1e-7)
    np.testing.assert_allclose(embeddings.of(["dog"]), [[h, h, 0]], rtol=1e-6)
    with pytest.raises(KeyError):
        embeddings.of(["unicorn"])


def test_embedding_a_zero_vector_does_not_divide_by_zero():
    embeddings = WordEmbeddings(VOCAB, encoder=FakeEncoder(TABLE))
    vector = embeddings.embed(["zero"])
    assert np.all(np.isfinite(vector))
    assert np.all(vector == 0)


def test_nearest_words_by_cosine_similarity():
    # "pets" ~ (1, 0.1, 0): cat 0.995, dog 0.778, bus 0.070, car 0 (each up to the same factor)
    embeddings = WordEmbeddings(VOCAB, encoder=FakeEncoder(TABLE))
    assert embeddings.nearest("pets", 2, exclude=set()) == ["cat", "dog"]
    assert embeddings.nearest("pets", 4, exclude=set()) == ["cat", "dog", "bus", "car"]
    assert embeddings.nearest("pets", 2, exclude={"cat"}) == ["dog", "bus"]
    assert embeddings.nearest("pets", 5, exclude={"cat", "bus"}) == ["dog", "car"]
    assert embeddings.nearest("car", 1, exclude={"car"}) == ["bus"]


# -- EmbeddingTopicJudge ----------------------------------------------------------------------------

# 2-d unit vectors at these angles: the top words' centroid points at about -3.3 degrees, so
# closeness to it ranks core (3.3 deg off), near (13.3), mid (16.7), odd (86.7), far (93.3);
# among the candidates, good (-2.9 deg) is the closest of all and bad (180) the farthest
ANGLES = {"core": 0, "near": 10, "mid": -20, "far": 90, "odd": -90, "good": math.degrees(math.atan2(-0.05, 1)), "bad": 180}
TOPIC = ["core", "near", "mid", "far", "odd"]


def judge_for(table: dict[str, list[float]], **kw) -> EmbeddingTopicJudge:
    return EmbeddingTopicJudge(WordEmbeddings(list(table), encoder=FakeEncoder(table)), **kw)


def angle_judge(**kw) -> EmbeddingTopicJudge:
    # lengths differ on purpose: only the directions may matter
    return judge_for({w: polar(a, 1 + i) for i, (w, a) in enumerate(ANGLES.items())}, **kw)


def test_coherence_is_the_mean_pairwise_cosine_similarity():
    judge = judge_for({"a": [2.0, 0.0], "b": [0.0, 3.0], "c": [5.0, 0.0], "d": [1.0, 1.0]})
    # a.b = 0, a.c = 1, b.c = 0 → 2 * 1 / (3 * 2)
    assert judge.coherence(["a", "b", "c"]) == pytest.approx(1 / 3)
    assert judge.coherence(["a", "c"]) == pytest.approx(1.0)
    assert judge.coherence(["a", "b"]) == pytest.approx(0.0)
    # a.d = b.d = c.d = 1/sqrt2, a.b = b.c = 0, a.c = 1 → (3/sqrt2 + 1) / 6
    assert judge.coherence(["a", "b", "c", "d"]) == pytest.approx((3 / math.sqrt(2) + 1) / 6, rel=1e-6)


def test_rate_scores_by_the_coherence_thresholds():
    table = {"a": [1.0, 0.0], "a2": [4.0, 0.0], "b": [0.0, 1.0], "c": [1.0, 0.0], "c2": [1.0, 0.0]}
    judge = judge_for(table)  # coherent 0.35, mixed 0.25
    assert judge.rate(["a", "a2", "c"]).score == 3  # coherence 1
    assert judge.rate(["a", "b", "c"]).score == 2  # coherence 1/3
    assert judge.rate(["a", "b"]).score == 1  # coherence 0
    # custom thresholds, inclusive at the bound
    assert judge_for(table, coherent=1.0, mixed=0.5).rate(["a", "c"]).score == 3
    assert judge_for(table, coherent=0.9, mixed=1 / 3 - 1e-6).rate(["a", "b", "c"]).score == 2
    assert judge_for(table, coherent=0.9, mixed=0.34).rate(["a", "b", "c"]).score == 1
    assert judge_for(table, coherent=0.0, mixed=0.0).rate(["a", "b"]).score == 3


def test_rate_describes_the_topic_by_its_three_most_central_words():
    rating = angle_judge().rate(TOPIC)
    assert isinstance(rating, TopicRating)
    assert rating.description == "a topic about core, near, mid"
    # cos 10, cos 20, cos 90, ... : mean pairwise similarity of the five words
    vectors = np.array([polar(ANGLES[w]) for w in TOPIC])
    similarity = vectors @ vectors.T
    expected = (similarity.sum() - 5) / 20
    assert angle_judge().coherence(TOPIC) == pytest.approx(expected, rel=1e-5)
    assert rating.score == (3 if expected >= 0.35 else 2 if expected >= 0.25 else 1)


def test_choose_winners_nearest_the_centroid_losers_from_the_top_words_below_the_median():
    choice = angle_judge(num_winners=3, num_losers=3).choose(TOPIC, ["good", "bad"], "any description")
    winners, losers = choice.winners, choice.losers
    assert winners == ["good", "core", "near"]
    # median closeness is that of 'mid': below it are far and odd, farthest first; 'bad' is a
    # candidate, never a loser, though it is the farthest of all
    assert losers == ["far", "odd"]


def test_choose_caps_the_losers():
    assert angle_judge(num_winners=3, num_losers=1).choose(TOPIC, ["good", "bad"], "").losers == ["far"]


def test_choose_never_names_a_word_both_winner_and_loser():
    # with 7 winners every word of the pool wins, so none may lose
    choice = angle_judge(num_winners=7).choose(TOPIC, ["good", "bad"], "")
    winners, losers = choice.winners, choice.losers
    assert winners == ["good", "core", "near", "mid", "odd", "far", "bad"]
    assert losers == []


def test_choose_counts_a_candidate_that_is_also_a_top_word_once():
    winners = angle_judge(num_winners=3).choose(TOPIC, ["core", "good"], "").winners
    assert winners == ["good", "core", "near"]


def test_embedding_judge_gives_a_reason_for_every_chosen_word():
    choice = angle_judge(num_winners=3, num_losers=3).choose(TOPIC, ["good", "bad"], "")
    assert set(choice.reasons) == set(choice.winners + choice.losers)
    centre = np.array([polar(ANGLES[w]) for w in TOPIC]).mean(axis=0)
    expected = np.array(polar(ANGLES["far"])) @ centre / np.linalg.norm(centre)
    assert choice.reasons["far"] == f"cosine {expected:.2f} to the topic's centroid"


def test_embedding_judge_candidates_are_the_words_nearest_the_description():
    table = {"alpha": [1.0, 0.0], "beta": [0.9, 0.1], "gamma": [0.0, 1.0], "about alpha": [1.0, 0.05]}
    judge = judge_for(table)
    # the description's own vector is in this table's vocabulary too: excluded like a top word
    assert judge.candidates(["x"], "about alpha", 2, exclude={"alpha", "about alpha"}) == ["beta", "gamma"]


# -- DocumentCooccurrence and CoherenceTopicJudge, by hand ---------------------------------------------

# 8 documents. 'goal' and 'match' always meet; 'league' meets them in 2 of its 4 documents; 'market'
# appears only where they do not; 'said' is everywhere; 'vote' never appears.
DOCS = [
    ["goal", "match", "league", "said"],
    ["goal", "match", "league", "said"],
    ["goal", "match", "said"],
    ["goal", "match", "said"],
    ["league", "market", "said"],
    ["league", "market", "said"],
    ["market", "said"],
    ["market", "said"],
]
WORDS = ["goal", "match", "league", "market", "said", "vote"]


def npmi_by_hand(n_ab: int, n_a: int, n_b: int, n: int = 8) -> float:
    p_ab, p_a, p_b = n_ab / n, n_a / n, n_b / n
    return math.log(p_ab / (p_a * p_b)) / -math.log(p_ab)


def test_npmi_from_document_cooccurrence_by_hand():
    table = DocumentCooccurrence(DOCS, WORDS).npmi(["goal", "league"])  # (2, V)
    assert table.shape == (2, 6)
    goal, league = table
    # goal and match: always together, p = 4/8 each and together → log(0.5 / 0.25) / −log 0.5 = 1
    assert goal[1] == pytest.approx(1.0)
    assert goal[2] == pytest.approx(npmi_by_hand(2, 4, 4))  # = 0: independent
    assert goal[3] == -1.0  # never together
    assert goal[5] == -1.0  # 'vote' appears nowhere
    assert league[3] == pytest.approx(npmi_by_hand(2, 4, 4))
    assert goal[0] == pytest.approx(1.0)  # a word with itself
    # 'said' is in every document: p(said) = 1, p(goal, said) = p(goal) → log 1 / −log 0.5 = 0
    assert goal[4] == pytest.approx(0.0)


def test_npmi_of_two_words_in_every_document_is_one():
    table = DocumentCooccurrence([["a", "b"], ["a", "b"]], ["a", "b"]).npmi(["a"])
    assert table.tolist() == [[1.0, 1.0]]


# 'score' joins goal and match in three of their four documents
SCORED_DOCS = [doc + ["score"] if i < 3 else doc for i, doc in enumerate(DOCS)]
# NPMI(score, goal) = NPMI(score, match) = log(p(s, g) / (p(s) p(g))) / −log p(s, g) with 3/8, 3/8, 4/8
SCORE_FIT = math.log((3 / 8) / ((3 / 8) * (4 / 8))) / -math.log(3 / 8)
# top-4 words in rank order, then 'league' at rank 5
RANKED = ["goal", "match", "market", "said", "league"]


def coherence_judge(**kw) -> CoherenceTopicJudge:
    return CoherenceTopicJudge(DocumentCooccurrence(SCORED_DOCS, WORDS + ["score"]), top=4, **kw)


def test_coherence_judge_core_is_the_better_half_of_the_top_words():
    # fits among the top 4 (mean NPMI with the other three): goal (1 − 1 + 0)/3 = 0, match 0,
    # market (−1 − 1 + 0)/3 = −2/3, said 0 → the better half, ties in rank order
    assert coherence_judge().core(RANKED) == ["goal", "match"]


def test_coherence_judge_rates_by_the_mean_npmi_of_the_top_words():
    # mean of the fits above: −1/6 → unrelated; the description names the core
    assert coherence_judge().rate(RANKED) == TopicRating(1, "a topic about goal, match")
    assert coherence_judge(coherent=-0.17, mixed=-0.2).rate(RANKED).score == 3
    assert coherence_judge(coherent=0.0, mixed=-0.17).rate(RANKED).score == 2


def test_coherence_judge_candidates_fit_the_core_best():
    # fit with the core (goal, match): score SCORE_FIT, vote −1 (never appears)
    judge = coherence_judge()
    assert judge.candidates(RANKED, "", 2, exclude=set(RANKED)) == ["score", "vote"]


def test_coherence_judge_losers_leave_the_core_winners_would_enter_the_top_words():
    choice = coherence_judge().choose(RANKED, ["score", "vote"], "football")
    assert isinstance(choice, WordChoice)
    # fits with the core: market −1, said 0 (both below the core's lowest fit, 1, by more than
    # the margin), league 0 and vote −1 not above the best loser's 0, score ≈ 0.71
    assert choice.losers == ["market", "said"]
    assert choice.winners == ["score"]
    assert choice.reasons["market"] == "mean NPMI -1.000 with the core (goal, match, ...)"
    assert choice.reasons["score"] == f"mean NPMI {SCORE_FIT:+.3f} with the core (goal, match, ...)"
    assert set(choice.reasons) == {"score", "market", "said"}


def test_coherence_judge_caps_winners_and_losers():
    choice = coherence_judge(num_winners=1, num_losers=1).choose(RANKED, ["score", "vote"], "")
    assert (choice.winners, choice.losers) == (["score"], ["market"])


def test_coherence_judge_names_no_loser_within_the_margin_of_the_core():
    # the losers' fits are 2 and 1 below the core's: a margin of 2 spares both, and with no loser
    # every word that fits better than nothing (−inf) may win
    choice = coherence_judge(margin=2.0).choose(RANKED, ["score", "vote"], "")
    assert choice.losers == []
    assert choice.winners == ["score", "league", "vote"]


# -- OpenAITopicJudge against a local server --------------------------------------------------------


def tool_reply(name: str, arguments) -> dict:
    """A chat-completions response whose message calls ``name`` with ``arguments`` (a dict is JSON-encoded)."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"choices": [{"message": {"tool_calls": [{"type": "function", "function": {"name": name, "arguments": text}}]}}]}


@pytest.fixture
def topic_judge(api, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    waits = []
    client = OpenAIJudge(api.url, "test-model", max_retries=3, backoff=0.0, timeout=5.0, sleep=waits.append)
    judge = OpenAITopicJudge(client, FakeNearest())
    judge.waits = waits
    return judge


class FakeNearest:
    """Stands in for WordEmbeddings.nearest: the description's words, minus the excluded ones."""

    def nearest(self, text, n, exclude):
        return [w for w in text.split() if w not in exclude][:n]


def user_message(body: dict) -> str:
    return body["messages"][-1]["content"]


def test_rate_asks_with_the_rate_function_and_returns_the_rating(api, topic_judge):
    api.reply(200, tool_reply("rate_topic", {"score": 2, "description": "economy"}))
    assert topic_judge.rate(["bank", "money", "market"]) == TopicRating(2, "economy")
    (body,) = api.bodies
    assert body["model"] == "test-model"
    assert body["tools"] == [{"type": "function", "function": RATE_FUNCTION}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "rate_topic"}}
    assert "bank, money, market" in user_message(body)


def test_rate_asks_an_unrelated_topic_for_a_description_unlike_the_others(api, topic_judge):
    api.reply(200, tool_reply("rate_topic", {"score": 1, "description": "space travel"}))
    topic_judge.rate(["bank", "goal"], ["the economy", "football"])
    prompt = user_message(api.bodies[0])
    assert "If you rate it 1" in prompt and "the economy; football" in prompt


def test_openai_judge_candidates_come_from_the_embeddings(topic_judge):
    assert topic_judge.candidates(["bank"], "money and banks", 5, exclude={"and"}) == ["money", "banks"]


def test_openai_judge_gives_reasons(api, topic_judge):
    api.reply(200, tool_reply("choose_words", {"good_words": ["bank"], "bad_words": ["said"]}))
    choice = topic_judge.choose(["bank", "said"], [], "economy")
    assert choice.reasons == {"bank": "named a good word for 'economy'", "said": "named a word that does not fit 'economy'"}


def test_rate_strips_the_description(api, topic_judge):
    api.reply(200, tool_reply("rate_topic", {"score": 3, "description": "  the economy \n"}))
    assert topic_judge.rate(["bank"]) == TopicRating(3, "the economy")


def test_rate_accepts_arguments_given_as_an_object(api, topic_judge):
    reply = tool_reply("rate_topic", "{}")
    reply["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = {"score": 1, "description": "noise"}
    api.reply(200, reply)
    assert topic_judge.rate(["bank"]) == TopicRating(1, "noise")


def test_choose_asks_with_the_choose_function(api, topic_judge):
    api.reply(200, tool_reply("choose_words", {"good_words": ["bank", "finance"], "bad_words": ["said"]}))
    choice = topic_judge.choose(["bank", "said", "money"], ["finance", "loans"], "economy")
    winners, losers = choice.winners, choice.losers
    assert (winners, losers) == (["bank", "finance"], ["said"])
    assert topic_judge.ignored_words == 0
    (body,) = api.bodies
    assert body["tools"] == [{"type": "function", "function": CHOOSE_FUNCTION}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "choose_words"}}
    prompt = user_message(body)
    assert "economy" in prompt and "bank, said, money" in prompt and "finance, loans" in prompt


def test_choose_drops_and_counts_words_that_were_not_offered(api, topic_judge):
    api.reply(200, tool_reply("choose_words", {"good_words": ["bank", "banana", "finance"], "bad_words": ["said", "zebra"]}))
    choice = topic_judge.choose(["bank", "said", "money"], ["finance", "loans"], "economy")
    winners, losers = choice.winners, choice.losers
    assert winners == ["bank", "finance"]
    assert losers == ["said"]
    assert topic_judge.ignored_words == 2


def test_choose_drops_losers_that_are_not_top_words(api, topic_judge):
    # 'loans' was offered as a candidate, so it may win but not lose
    api.reply(200, tool_reply("choose_words", {"good_words": ["money"], "bad_words": ["said", "loans"]}))
    choice = topic_judge.choose(["bank", "said", "money"], ["finance", "loans"], "economy")
    winners, losers = choice.winners, choice.losers
    assert winners == ["money"]
    assert losers == ["said"]
    assert topic_judge.ignored_words == 1


def test_ignored_words_add_up_over_calls(api, topic_judge):
    api.reply(200, tool_reply("choose_words", {"good_words": ["bank", "nope"], "bad_words": []}))
    api.reply(200, tool_reply("choose_words", {"good_words": ["bank"], "bad_words": ["never", "said"]}))
    topic_judge.choose(["bank", "said"], [], "economy")
    topic_judge.choose(["bank", "said"], [], "economy")
    assert topic_judge.ignored_words == 2


@pytest.mark.parametrize("bad", [
    tool_reply("rate_topic", {"score": 7, "description": "economy"}),
    tool_reply("rate_topic", {"score": 2}),
    tool_reply("rate_topic", "score 2, economy"),  # arguments that are not JSON
    tool_reply("rate_topic", "[2, \"economy\"]"),  # JSON, but not an object
    {"choices": [{"message": {"content": "{\"score\": 2, \"description\": \"economy\"}"}}]},  # no tool_calls
])
def test_malformed_rating_is_retried(api, topic_judge, bad):
    api.reply(200, bad).reply(200, tool_reply("rate_topic", {"score": 2, "description": "economy"}))
    assert topic_judge.rate(["bank"]) == TopicRating(2, "economy")
    assert len(api.bodies) == 2
    assert api.bodies[0] == api.bodies[1]  # the same request again


def test_malformed_replies_exhaust_the_retries(api, topic_judge):
    api.reply(200, tool_reply("rate_topic", {"score": 7, "description": "economy"}))
    api.reply(200, tool_reply("rate_topic", "not json at all"))
    api.reply(200, {"choices": [{"message": {"role": "assistant", "content": "I think 2"}}]})
    with pytest.raises(PosttrainError, match="failed 3 times"):
        topic_judge.rate(["bank", "money"])
    assert len(api.bodies) == 3
    assert topic_judge.waits == []  # backoff 0: nothing waits


def test_malformed_word_lists_exhaust_the_retries(api, topic_judge):
    api.reply(200, tool_reply("choose_words", {"good_words": "bank", "bad_words": []}))
    api.reply(200, tool_reply("choose_words", {"good_words": ["bank"], "bad_words": [1, 2]}))
    api.reply(200, tool_reply("choose_words", {"good_words": ["bank"]}))
    with pytest.raises(PosttrainError, match="malformed reply"):
        topic_judge.choose(["bank", "said"], ["money"], "economy")
    assert len(api.bodies) == 3
    assert topic_judge.ignored_words == 0
