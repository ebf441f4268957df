"""``posttrain topics``: ECRTM, then LLM-guided DPO on its topic-word distributions.

    posttrain topics --config recipes/topics.yaml

1. Load and preprocess the corpus (:mod:`posttrain.topics.corpus`).
2. Train ECRTM for ``dpo_start_epoch`` epochs.
3. Snapshot: ``snapshot.pt``, ``beta_ref_logits.npy`` (K, V), ``top_words_{10,15,20,25}.jsonl``.
4. Judge every topic into ``preferences.jsonl`` (resumable) and pick the topics DPO acts on
   (``topic_filter``).
5. Train the remaining epochs on L_ECRTM + dpo_weight · L_DPO, with L_DPO
   (:func:`posttrain.losses.topic_dpo.topic_word_dpo_loss`, on the distribution named by
   ``dpo_distribution``) against the frozen snapshot, only on the chosen topics' (winner, loser)
   word pairs.

Every ``eval_every`` epochs: TD, C_V, NPMI, purity, NMI (all topics and the filtered ones) into
``metrics.jsonl``; at the end ``eval.json`` and ``metrics.png``. ``checkpoint.pt`` (model,
optimizer, epoch, RNG) is written atomically every ``save_every`` epochs; ``resume`` continues
from it, and a finished snapshot or judged topic is never redone.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from posttrain.artifacts import atomic_open, write_json, write_png
from posttrain.config import config_field
from posttrain.data.jsonl import append_jsonl, iter_jsonl, write_jsonl
from posttrain.errors import ConfigError, DataError
from posttrain.losses.topic_dpo import TopicDistribution, topic_word_dpo_loss
from posttrain.preemption import Preempted, stop_requested, stoppable_loop
from posttrain.runtime import get_logger, seed_everything
from posttrain.topics.corpus import TopicCorpus, load_topic_corpus, read_raw_corpus, stop_words, tokenize
from posttrain.topics.ecrtm import ECRTM
from posttrain.topics.judges import CoherenceTopicJudge, DocumentCooccurrence, EmbeddingTopicJudge, OpenAITopicJudge, WordEmbeddings
from posttrain.topics.metrics import coherence_per_topic, nmi, purity, top_words, topic_diversity, topic_metrics
from posttrain.topics.preferences import TopicFilter, build_preferences, preference_triples, select_topics

log = get_logger(__name__)

TOP_WORD_SIZES = (10, 15, 20, 25)


@dataclass
class TopicsJobConfig:
    output_dir: str = config_field("runs/topics", help="Where checkpoints, snapshot, preferences and metrics go.")
    # corpus
    corpus: str = config_field("bbc", help="bbc (BBC News, offline), a .jsonl of {text, label?}, a .txt (a document per line), or a TopMost directory.")
    vocab_size: int = config_field(5000, help="Largest vocabulary (raw-text corpora).", ge=2)
    min_df: int = config_field(3, help="A word must appear in at least this many documents.", ge=1)
    max_df: float = config_field(0.5, help="... and in at most this share of them.", gt=0, le=1)
    test_fraction: float = config_field(0.2, help="Labelled documents held out for purity and NMI.", ge=0, le=0.9)
    reference_corpus: str = config_field("", help="Coherence reference (.txt or .jsonl); empty: the training corpus.")
    # ECRTM (the defaults of Wu et al. 2023)
    num_topics: int = config_field(50, help="K, the number of topics.", ge=2)
    beta_temp: float = config_field(0.2, help="τ in softmax(−dist/τ).", gt=0)
    ecr_weight: float = config_field(100.0, help="Weight of the ECR loss (the paper uses 250 for 20NG).", ge=0)
    hidden_size: int = config_field(200, help="Encoder width.", ge=1)
    embed_size: int = config_field(200, help="Topic and word embedding size.", ge=1)
    dropout: float = config_field(0.0, help="Encoder dropout.", ge=0, le=1)
    sinkhorn_epsilon: float = config_field(0.05, help="ε of the entropic OT (1/20).", gt=0)
    sinkhorn_max_iter: int = config_field(1000, help="Sinkhorn iterations at most.", ge=1)
    sinkhorn_stop: float = config_field(0.005, help="Stop when the column marginals are this close (L1).", gt=0)
    # training
    num_epochs: int = config_field(200, help="Training epochs in all (before and after the snapshot).", ge=1)
    batch_size: int = config_field(200, help="Documents per step.", ge=2)
    learning_rate: float = config_field(0.002, help="Adam learning rate.", gt=0)
    seed: int = config_field(0, help="Seed for the split, initialisation and batches.")
    eval_every: int = config_field(25, help="Evaluate every N epochs (and at the snapshot and the end).", ge=1)
    save_every: int = config_field(25, help="Write checkpoint.pt every N epochs.", ge=1)
    resume: bool = config_field(False, help="Continue from checkpoint.pt in output_dir.")
    # DPO on topic-word distributions
    dpo: bool = config_field(True, help="Snapshot at dpo_start_epoch, judge the topics, continue with the DPO loss.")
    dpo_start_epoch: int = config_field(150, help="E: the epoch after which the snapshot is taken.", ge=1)
    dpo_weight: float = config_field(10.0, help="w in L_ECRTM + w·L_DPO.", ge=0)
    dpo_alpha: float = config_field(1.0, help="α in −log σ(α·margin).", gt=0)
    dpo_distribution: TopicDistribution = config_field(
        "words", help="words: each topic's softmax over the vocabulary (the original form); beta: ECRTM's β, softmax over topics, which ranks the top words.")
    topic_filter: TopicFilter = config_field(
        "cv_below_avg", help="Topics DPO acts on: C_V below the mean, judge score below 3, either, or all.")
    judge: Literal["coherence", "embedding", "openai"] = config_field(
        "embedding", help="coherence (offline, NPMI on the reference corpus), embedding (offline, all-MiniLM-L6-v2) or openai.")
    judge_base_url: str = config_field("", help="openai judge: the API root, e.g. https://api.openai.com/v1.")
    judge_model: str = config_field("", help="openai judge: the model name.")
    judge_api_key_env: str = config_field("OPENAI_API_KEY", help="openai judge: environment variable with the key.")

    def __post_init__(self):
        if self.dpo and self.dpo_start_epoch >= self.num_epochs:
            raise ConfigError(
                f"config key 'dpo_start_epoch' ({self.dpo_start_epoch}) must be below num_epochs ({self.num_epochs}) "
                "so that DPO has epochs to run (or set dpo: false)"
            )
        if self.dpo and self.judge == "openai" and not (self.judge_base_url and self.judge_model):
            raise ConfigError("judge openai needs judge_base_url and judge_model")


def _make_judge(config: TopicsJobConfig, vocab: list[str], reference: list[list[str]], out: Path):
    if config.judge == "coherence":
        return CoherenceTopicJudge(DocumentCooccurrence(reference, vocab))
    if config.judge == "embedding":
        return EmbeddingTopicJudge(WordEmbeddings(vocab))
    from posttrain.judges.openai_client import OpenAIClient

    client = OpenAIClient(config.judge_base_url, config.judge_model, config.judge_api_key_env, cache_dir=str(out / "judge_cache"))
    return OpenAITopicJudge(client, WordEmbeddings(vocab))


def _reference_texts(config: TopicsJobConfig, corpus: TopicCorpus) -> list[list[str]]:
    if not config.reference_corpus:
        return corpus.train.texts
    texts, _ = read_raw_corpus(config.reference_corpus)
    words = stop_words()
    return [tokens for tokens in (tokenize(t, words) for t in texts) if tokens]


def evaluate(model: ECRTM, corpus: TopicCorpus, reference: list[list[str]]) -> dict:
    """TD, C_V, NPMI (per topic too) and, with labelled test documents, purity and NMI.

    Also keeps the top-25 lists and the test documents' main topics under ``_lists`` and
    ``_clusters`` for :func:`add_filtered_metrics`.
    """
    model.eval()
    with torch.no_grad():
        beta = model.get_beta().cpu().numpy()
        lists = {n: top_words(beta, corpus.vocab, n) for n in (10, 25)}
        result = topic_metrics(lists[10], lists[25], reference)
        result["_lists"], result["_clusters"] = lists[25], None
        if corpus.test is not None and corpus.test.labels is not None:
            theta = model.get_theta(torch.from_numpy(corpus.test.bow.toarray()))
            clusters = theta.argmax(dim=1).tolist()
            result.update(purity=purity(corpus.test.labels, clusters), nmi=nmi(corpus.test.labels, clusters), _clusters=clusters)
    model.train()
    return result


def add_filtered_metrics(result: dict, filtered: list[int] | None, labels: list[int] | None) -> None:
    """The same metrics for the filtered topics, under ``result["filtered"]`` (purity and NMI on
    the test documents whose main topic is a filtered one)."""
    if not filtered:
        return
    sub = {
        "num_topics": len(filtered),
        "td": topic_diversity([result["_lists"][k] for k in filtered]),
        "c_v": float(np.mean([result["c_v_per_topic"][k] for k in filtered])),
        "npmi": float(np.mean([result["npmi_per_topic"][k] for k in filtered])),
    }
    if result["_clusters"] is not None:
        chosen = set(filtered)
        pairs = [(label, c) for label, c in zip(labels, result["_clusters"]) if c in chosen]
        if pairs:
            sub.update(purity=purity(*map(list, zip(*pairs))), nmi=nmi(*map(list, zip(*pairs))), num_documents=len(pairs))
    result["filtered"] = sub


def _reported(result: dict) -> dict:
    """The numbers of an evaluation that go into metrics.jsonl and eval.json (no per-topic lists)."""
    return {k: v for k, v in result.items() if not k.endswith("_per_topic") and not k.startswith("_")}


def _save_checkpoint(path: Path, model: ECRTM, optimizer: torch.optim.Optimizer, epoch: int) -> None:
    state = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
    }
    with atomic_open(path, "wb") as handle:
        torch.save(state, handle)


def _load_checkpoint(path: Path, model: ECRTM, optimizer: torch.optim.Optimizer) -> int:
    state = torch.load(path, weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    return state["epoch"]


def _snapshot(out: Path, model: ECRTM, vocab: list[str]) -> None:
    """Write the snapshot artifacts: the model, the top words and the reference logits (K, V)."""
    with torch.no_grad():
        logits = model.get_beta_logits().cpu().numpy()
        beta = model.get_beta().cpu().numpy()
    with atomic_open(out / "snapshot.pt", "wb") as handle:
        torch.save(model.state_dict(), handle)
    for n in TOP_WORD_SIZES:
        write_jsonl(out / f"top_words_{n}.jsonl", [{"topic": k, "words": words} for k, words in enumerate(top_words(beta, vocab, n))])
    with atomic_open(out / "beta_ref_logits.npy", "wb") as handle:  # last: its presence marks a finished snapshot
        np.save(handle, logits)


def _read_top_words(out: Path, n: int) -> list[list[str]]:
    return [row["words"] for _, row in iter_jsonl(out / f"top_words_{n}.jsonl", required={"words": list})]


def plot_metrics(history: list[dict], dpo_start_epoch: int | None, path: Path) -> None:
    """TD, C_V, NPMI, purity and NMI over epochs (solid: all topics, dashed: the filtered ones)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("td", "c_v", "npmi", "purity", "nmi") if any(k in row for row in history)]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.2))
    for ax, key in zip(np.atleast_1d(axes), keys):
        rows = [row for row in history if key in row]
        ax.plot([r["epoch"] for r in rows], [r[key] for r in rows], "o-", label="all topics")
        sub = [row for row in history if key in row.get("filtered", {})]
        if sub:
            ax.plot([r["epoch"] for r in sub], [r["filtered"][key] for r in sub], "s--", label="filtered topics")
        if dpo_start_epoch is not None:
            ax.axvline(dpo_start_epoch, color="grey", lw=0.8, ls=":")
        ax.set(title=key.upper().replace("_", " "), xlabel="epoch")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    write_png(fig, path)


def run_topics(config: TopicsJobConfig) -> dict:
    """Train ECRTM (with DPO after the snapshot); write the artifacts; return the final metrics.

    SIGTERM stops the run at the next epoch boundary with a checkpoint of the finished epochs (an
    epoch is this loop's step: a few seconds on BBC News), resumable with ``resume: true``."""
    with stoppable_loop():
        training = TopicTraining.setup(config)
        if config.dpo and training.start >= config.dpo_start_epoch:  # resumed after the snapshot
            training.prepare_dpo()
        epochs = range(training.start + 1, config.num_epochs + 1)
        for epoch in tqdm(epochs, desc="ECRTM epochs", initial=training.start, total=config.num_epochs):
            training.train_epoch(epoch)
        return training.save()


@dataclass
class TopicTraining:
    """One ``posttrain topics`` run, as the steps :func:`run_topics` takes: ``setup``, then
    ``prepare_dpo`` (at the snapshot epoch, or at once when resumed after it), ``train_epoch``
    for each epoch left, ``save``.

    The model, its optimizer and the DPO targets are fields because the steps share them: the
    snapshot epoch's evaluation prepares the targets that every later epoch trains on.
    """

    config: TopicsJobConfig
    corpus: TopicCorpus
    reference: list[list[str]]  # tokenised coherence reference texts
    model: ECRTM
    optimizer: torch.optim.Optimizer
    start: int  # epochs finished before this run (resume)
    history: list[dict]  # metrics.jsonl rows, for the plot
    # set by prepare_dpo: the snapshot's logits (K, V), the (topic, winner, loser) word triples,
    # the topics DPO acts on and what dpo_summary.json says
    ref_logits: torch.Tensor | None = None
    triples: torch.Tensor | None = None
    filtered: list[int] | None = None
    dpo_summary: dict = field(default_factory=dict)
    last: dict | None = None  # the latest evaluation

    @classmethod
    def setup(cls, config: TopicsJobConfig) -> TopicTraining:
        """Seed; load the corpus and the coherence reference; build ECRTM and Adam; continue from
        checkpoint.pt when resuming (else start a fresh metrics history); write config.json.
        Everything that can fail on bad input fails here, before anything is written."""
        seed_everything(config.seed)
        out = Path(config.output_dir)
        corpus = _load_corpus(config)
        reference = _reference_texts(config, corpus)
        log.info(f"topics: {corpus.train.bow.shape[0]} training documents, {len(corpus.vocab)} words, K={config.num_topics}"
                 + (f", {corpus.test.bow.shape[0]} labelled test documents" if corpus.test is not None else ""))
        model = _build_model(config, len(corpus.vocab))
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        checkpoint = out / "checkpoint.pt"
        start = _load_checkpoint(checkpoint, model, optimizer) if config.resume and checkpoint.is_file() else 0
        if start:
            log.info(f"resuming after epoch {start}")
        elif (out / "metrics.jsonl").exists():
            (out / "metrics.jsonl").unlink()  # a fresh run starts a fresh history
        write_json(out / "config.json", asdict(config))
        history = [row for _, row in iter_jsonl(out / "metrics.jsonl")] if start and (out / "metrics.jsonl").is_file() else []
        return cls(config, corpus, reference, model, optimizer, start, history)

    @property
    def out(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def labels(self) -> list[int] | None:
        """The labelled test documents' labels (purity and NMI), if the corpus has them."""
        return self.corpus.test.labels if self.corpus.test is not None else None

    # -- the steps --------------------------------------------------------------------------------

    def prepare_dpo(self, c_v: list[float] | None = None) -> None:
        """Snapshot (unless done), judge, filter, build the word pairs. ``c_v``: the snapshot's
        per-topic C_V if the caller just evaluated it (else it is computed from the top words)."""
        out, vocab = self.out, self.corpus.vocab
        if not (out / "beta_ref_logits.npy").is_file():
            _snapshot(out, self.model, vocab)
        self.ref_logits = torch.from_numpy(np.load(out / "beta_ref_logits.npy"))
        top10, top15 = _read_top_words(out, 10), _read_top_words(out, 15)
        judge = _make_judge(self.config, vocab, self.reference, out)
        preferences = build_preferences(out / "preferences.jsonl", top10, top15, judge, held_lists=_read_top_words(out, 25))
        if c_v is None:
            c_v = coherence_per_topic(top10, self.reference, "c_v")
        self.filtered = select_topics(self.config.topic_filter, c_v, preferences)
        pairs, ignored = preference_triples(preferences, self.filtered, vocab)
        ignored += getattr(judge, "ignored_words", 0)
        self.triples = torch.from_numpy(pairs)
        self.dpo_summary = {"filtered_topics": self.filtered, "preference_pairs": len(pairs), "ignored_words": ignored}
        write_json(out / "dpo_summary.json", self.dpo_summary)
        log.info(f"DPO on {len(self.filtered)} of {self.config.num_topics} topics ({self.config.topic_filter}): {len(pairs)} word pairs"
                 + (f", {ignored} judge words outside the vocabulary ignored" if ignored else ""))

    def train_epoch(self, epoch: int) -> None:
        """One pass over the training documents; then, when due, an evaluation (which at the
        snapshot epoch prepares DPO); the metrics row; the checkpoint when due. A SIGTERM received
        during the epoch raises :class:`Preempted` once the checkpoint is written."""
        row = {"epoch": epoch, **self._optimize()}
        if self._evaluates(epoch):
            self._evaluate(epoch, row)
        append_jsonl(self.out / "metrics.jsonl", [row])
        self.history.append(row)
        stopping = stop_requested() and epoch < self.config.num_epochs  # SIGTERM during this epoch
        if stopping or epoch % self.config.save_every == 0 or epoch == self.config.num_epochs:
            _save_checkpoint(self.out / "checkpoint.pt", self.model, self.optimizer, epoch)
        if stopping:
            raise Preempted(f"stopped by SIGTERM after epoch {epoch} of {self.config.num_epochs}; {self.out / 'checkpoint.pt'} is complete")

    def save(self) -> dict:
        """``eval.json``, ``top_words_final.jsonl`` and ``metrics.png``; returns the final numbers."""
        if self.last is None:  # resumed after the last epoch: nothing trained, evaluate what is there
            self.last = evaluate(self.model, self.corpus, self.reference)
            add_filtered_metrics(self.last, self.filtered, self.labels)
        final = _reported(self.last)
        final.update(epoch=self.config.num_epochs, num_topics=self.config.num_topics, vocab_size=len(self.corpus.vocab),
                     num_documents=self.corpus.train.bow.shape[0], skipped_empty_documents=self.corpus.skipped_empty,
                     **self.dpo_summary)
        write_json(self.out / "eval.json", final)
        with torch.no_grad():
            beta = self.model.get_beta().cpu().numpy()
        write_jsonl(self.out / "top_words_final.jsonl",
                    [{"topic": k, "words": w} for k, w in enumerate(top_words(beta, self.corpus.vocab, 15))])
        plot_metrics(self.history, self.config.dpo_start_epoch if self.config.dpo else None, self.out / "metrics.png")
        return {k: v for k, v in final.items() if isinstance(v, (int, float))}

    # -- inside an epoch --------------------------------------------------------------------------

    def _optimize(self) -> dict:
        """The epoch's optimizer steps on L_ECRTM (+ dpo_weight · L_DPO once prepared); its mean losses."""
        batches = self._batches()
        totals = {"loss": 0.0, "topic_model": 0.0, "ecr": 0.0, "dpo": 0.0}
        for ids in batches:
            x = torch.from_numpy(self.corpus.train.bow[ids.numpy()].toarray())
            losses = self.model(x)
            loss = losses["loss"]
            if self.triples is not None and len(self.triples):
                dpo = topic_word_dpo_loss(self.model.get_beta_logits(), self.ref_logits, self.triples[:, 0], self.triples[:, 1],
                                          self.triples[:, 2], self.config.dpo_alpha, self.config.dpo_distribution)
                loss = loss + self.config.dpo_weight * dpo
                totals["dpo"] += dpo.item()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            totals["loss"] += loss.item()
            totals["topic_model"] += losses["topic_model"].item()
            totals["ecr"] += float(losses["ecr"])
        return {k: v / len(batches) for k, v in totals.items()}

    def _batches(self) -> list[torch.Tensor]:
        """The training documents' ids, shuffled, in batches of ``batch_size``; a last batch of
        one document joins the one before, since batch norm needs two."""
        num_docs, size = self.corpus.train.bow.shape[0], self.config.batch_size
        order = torch.randperm(num_docs)
        batches = [order[i : i + size] for i in range(0, num_docs, size)]
        if len(batches) > 1 and len(batches[-1]) < 2:
            batches[-2] = torch.cat(batches[-2:])
            batches.pop()
        return batches

    def _at_snapshot(self, epoch: int) -> bool:
        return self.config.dpo and epoch == self.config.dpo_start_epoch

    def _evaluates(self, epoch: int) -> bool:
        return epoch % self.config.eval_every == 0 or epoch == self.config.num_epochs or self._at_snapshot(epoch)

    def _evaluate(self, epoch: int, row: dict) -> None:
        """Evaluate into ``self.last`` and the metrics ``row``."""
        self.last = evaluate(self.model, self.corpus, self.reference)
        if self._at_snapshot(epoch):  # the evaluated model is the snapshot: its C_V picks the filtered topics
            self.prepare_dpo(c_v=self.last["c_v_per_topic"])
        add_filtered_metrics(self.last, self.filtered, self.labels)
        row.update(_reported(self.last))
        log.info(f"epoch {epoch}: TD {self.last['td']:.3f}, C_V {self.last['c_v']:.3f}, NPMI {self.last['npmi']:.3f}"
                 + (f", purity {self.last['purity']:.3f}, NMI {self.last['nmi']:.3f}" if "purity" in self.last else ""))


def _load_corpus(config: TopicsJobConfig) -> TopicCorpus:
    corpus = load_topic_corpus(config.corpus, config.vocab_size, config.min_df, config.max_df, config.test_fraction, config.seed)
    if len(corpus.vocab) < config.num_topics:
        raise DataError(f"{config.corpus}: a vocabulary of {len(corpus.vocab)} words is smaller than num_topics={config.num_topics}")
    return corpus


def _build_model(config: TopicsJobConfig, vocab_size: int) -> ECRTM:
    return ECRTM(
        vocab_size, config.num_topics, config.hidden_size, config.embed_size, config.dropout, config.beta_temp,
        config.ecr_weight, config.sinkhorn_epsilon, config.sinkhorn_max_iter, config.sinkhorn_stop,
    )
