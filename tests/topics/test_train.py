"""posttrain topics end to end on a small labelled corpus: artifacts, DPO effect, resume, bad input."""

import json
import random

import numpy as np
import pytest
import torch

from posttrain.config import load_config
from posttrain.errors import ConfigError, DataError
from posttrain.topics.train import TopicsJobConfig, run_topics

THEMES = {
    "sport": "football match goal team player coach league season score stadium referee striker",
    "money": "bank market shares price investors profit economy interest inflation trade company",
    "tech": "software computer internet users website digital phone network online technology data",
}


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    rows = []
    for label, words in THEMES.items():
        vocabulary = words.split()
        for _ in range(30):
            rows.append({"text": " ".join(rng.choices(vocabulary, k=25)), "label": label})
    rng.shuffle(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def config(corpus_file, out, **values):
    base = dict(
        corpus=corpus_file, output_dir=str(out), num_topics=4, vocab_size=100, min_df=1, max_df=1.0, num_epochs=6,
        dpo_start_epoch=3, eval_every=3, save_every=3, batch_size=32, hidden_size=32, embed_size=16,
        topic_filter="all", dpo_weight=50.0, seed=0,
    )
    return load_config(TopicsJobConfig, values={**base, **values})


def margins(out):
    """Mean (ℓ[w+] − ℓ[w−]) − (ℓref[w+] − ℓref[w−]) over the run's DPO word pairs, final model, with
    ℓ the log-softmax over words (dpo_distribution: words) or over topics (beta)."""
    from posttrain.topics.corpus import load_topic_corpus
    from posttrain.topics.preferences import preference_triples, read_preferences

    settings = json.loads((out / "config.json").read_text())
    vocab = load_topic_corpus(settings["corpus"], settings["vocab_size"], settings["min_df"], settings["max_df"]).vocab
    filtered = json.loads((out / "dpo_summary.json").read_text())["filtered_topics"]
    triples, _ = preference_triples(read_preferences(out / "preferences.jsonl"), filtered, vocab)
    k, w, lose = (torch.from_numpy(triples[:, i]) for i in range(3))
    state = torch.load(out / "checkpoint.pt", weights_only=False)["model"]
    dim = {"words": 1, "beta": 0}[settings["dpo_distribution"]]
    log_probs = torch.log_softmax(-torch.cdist(state["topic_embeddings"], state["word_embeddings"]) ** 2 / settings["beta_temp"], dim)
    ref = torch.log_softmax(torch.from_numpy(np.load(out / "beta_ref_logits.npy")), dim)
    return ((log_probs[k, w] - log_probs[k, lose]) - (ref[k, w] - ref[k, lose])).mean().item()


@pytest.mark.slow
def test_artifacts_metrics_and_the_dpo_effect(corpus_file, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "dpo"
    metrics = run_topics(config(corpus_file, out))
    for name in ("snapshot.pt", "checkpoint.pt", "preferences.jsonl", "dpo_summary.json", "top_words_final.jsonl"):
        assert (out / name).is_file(), name
    assert np.load(out / "beta_ref_logits.npy").shape == (4, 33)  # K x V: 33 distinct theme words
    for n in (10, 15, 20, 25):
        rows = [json.loads(line) for line in (out / f"top_words_{n}.jsonl").read_text().splitlines()]
        assert [r["topic"] for r in rows] == [0, 1, 2, 3] and all(len(r["words"]) == n for r in rows)
    preferences = [json.loads(line) for line in (out / "preferences.jsonl").read_text().splitlines()]
    assert sorted(p["topic"] for p in preferences) == [0, 1, 2, 3]
    assert all(set(p["w_lose"]) <= set(p["top_words"]) for p in preferences)
    assert all(set(p["w_win"]) <= set(p["top_words"]) | set(p["candidates"]) for p in preferences)

    saved = json.loads((out / "eval.json").read_text())
    assert {"td", "c_v", "npmi", "purity", "nmi", "filtered"} <= set(saved)
    assert {"td", "c_v", "npmi"} <= set(saved["filtered"]) and saved["filtered"]["num_topics"] == 4
    assert 0 < saved["td"] <= 1 and 0 <= saved["purity"] <= 1 and metrics["td"] == saved["td"]
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5, 6]
    assert [row["epoch"] for row in history if "c_v" in row] == [3, 6]
    assert all(row["dpo"] == 0 for row in history[:3]) and all(row["dpo"] > 0 for row in history[3:])
    assert (out / "metrics.png").read_bytes()[:4] == b"\x89PNG"

    # the same run with dpo_weight 0 shares everything up to the snapshot; DPO moves the
    # preferred words up against the dispreferred ones, relative to the snapshot
    base = tmp_path / "base"
    run_topics(config(corpus_file, base, dpo_weight=0.0))
    assert np.array_equal(np.load(out / "beta_ref_logits.npy"), np.load(base / "beta_ref_logits.npy"))
    assert margins(out) > 0.5 and margins(out) > margins(base) + 0.5


@pytest.mark.slow
def test_coherence_judge_with_dpo_on_beta(corpus_file, tmp_path):
    """The corpus-aware judge picks words with reasons; DPO on β moves the gaps that rank top words."""
    torch.set_num_threads(1)
    values = {"judge": "coherence", "dpo_distribution": "beta"}
    out, base = tmp_path / "dpo", tmp_path / "base"
    run_topics(config(corpus_file, out, **values))
    run_topics(config(corpus_file, base, dpo_weight=0.0, **values))
    preferences = [json.loads(line) for line in (out / "preferences.jsonl").read_text().splitlines()]
    assert any(p["w_lose"] for p in preferences)
    for p in preferences:
        assert set(p["reasons"]) == set(p["w_win"]) | set(p["w_lose"])
        assert all(reason.startswith("mean NPMI") for reason in p["reasons"].values())
        assert not set(p["candidates"]) & set(p["top_words"])
    assert margins(out) > 0.3 and margins(out) > margins(base) + 0.3


@pytest.mark.slow
def test_resume_continues_without_redoing_the_snapshot_or_the_judge(corpus_file, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    run_topics(config(corpus_file, out, num_epochs=4))
    snapshot = (out / "beta_ref_logits.npy").read_bytes()
    preferences = (out / "preferences.jsonl").read_text()

    import posttrain.topics.judges as judges

    def no_judging(*args, **kwargs):
        raise AssertionError("a judged topic was judged again")

    monkeypatch.setattr(judges.EmbeddingTopicJudge, "rate", no_judging)
    run_topics(config(corpus_file, out, num_epochs=6, resume=True))
    assert (out / "beta_ref_logits.npy").read_bytes() == snapshot
    assert (out / "preferences.jsonl").read_text() == preferences
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5, 6]
    assert json.loads((out / "eval.json").read_text())["epoch"] == 6


@pytest.mark.slow
def test_sigterm_stops_after_the_epoch_and_resume_gives_the_uninterrupted_run(corpus_file, tmp_path, monkeypatch):
    """A real SIGTERM in epoch 4 (after DPO started): the epoch finishes, is checkpointed, the run
    stops; resuming gives exactly the metrics and the model of a run that was never stopped."""
    import os
    import signal

    import posttrain.topics.train as train
    from posttrain.preemption import Preempted

    torch.set_num_threads(1)
    run_topics(config(corpus_file, tmp_path / "straight"))
    dpo_loss, calls = train.topic_word_dpo_loss, {"n": 0}

    def signalled(*args, **kwargs):  # DPO starts in epoch 4; its 2nd batch gets the signal
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return dpo_loss(*args, **kwargs)

    out = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        patch.setattr(train, "topic_word_dpo_loss", signalled)
        with pytest.raises(Preempted, match=f"stopped by SIGTERM after epoch 4 of 6; {out / 'checkpoint.pt'} is complete"):
            run_topics(config(corpus_file, out))
    assert torch.load(out / "checkpoint.pt", weights_only=False)["epoch"] == 4 and not (out / "eval.json").exists()
    run_topics(config(corpus_file, out, resume=True))

    def history(run):
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]

    assert [row["epoch"] for row in history(out)] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(history(tmp_path / "straight"), history(out)):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    final = [torch.load(run / "checkpoint.pt", weights_only=False)["model"] for run in (tmp_path / "straight", out)]
    assert all(torch.allclose(final[0][k], final[1][k], atol=1e-6) for k in final[0])


@pytest.mark.parametrize(
    "values, message",
    [
        ({"dpo_start_epoch": 6}, "'dpo_start_epoch' \\(6\\) must be below num_epochs \\(6\\)"),
        ({"num_topics": 1}, "'num_topics' must be >= 2"),
        ({"topic_filter": "best"}, "'topic_filter' in config: must be one of cv_below_avg, llm_score, either, all, got 'best'"),
        ({"judge": "gpt"}, "'judge' in config: must be one of coherence, embedding, openai, got 'gpt'"),
        ({"dpo_distribution": "topics"}, "'dpo_distribution' in config: must be one of words, beta, got 'topics'"),
        ({"judge": "openai"}, "judge openai needs judge_base_url and judge_model"),
        ({"batch_size": 1}, "'batch_size' must be >= 2"),
    ],
)
def test_bad_config(corpus_file, tmp_path, values, message):
    with pytest.raises(ConfigError, match=message):
        config(corpus_file, tmp_path, **values)


def test_vocabulary_smaller_than_k_is_a_clear_error(corpus_file, tmp_path):
    with pytest.raises(DataError, match="vocabulary of 33 words is smaller than num_topics=40"):
        run_topics(config(corpus_file, tmp_path, num_topics=40))


def test_one_document_is_a_clear_error(tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"text": "football match goal team"}) + "\n" + json.dumps({"text": "the and of"}) + "\n")
    with pytest.raises(DataError, match="1 usable document"):
        run_topics(config(str(path), tmp_path / "out"))
