"""ECRTM: Effective Neural Topic Modeling with Embedding Clustering Regularization.

Wu, Dong, Nguyen, Luu, ICML 2023 (https://arxiv.org/abs/2306.04217). A VAE topic model:

* encoder: bag of words (B, V) → V→200→200 (softplus) → μ, log σ² (B, K), each through a
  BatchNorm head; θ = softmax(z) with z = μ + σ·ε during training, z = μ at evaluation;
* a logistic-normal prior approximating Dirichlet(1) (Srivastava & Sutton 2017) for the KL term;
* topics and words share an embedding space: ``dist`` (K, V) is the squared Euclidean distance
  between topic and word embeddings; the topic-word matrix is β = softmax(−dist/τ, dim=0);
* decoder: x̂ = softmax(BN(θ β)), reconstruction loss −Σ x log x̂;
* ECR (:mod:`posttrain.losses.ecr`): the Sinkhorn transport cost between topic and word
  embeddings with cost ``dist``, weighted (default 100), which keeps topics apart.

``get_beta_logits()`` returns ``−dist/τ`` (K, V), the logits the topic DPO loss acts on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from posttrain.losses.ecr import ecr_loss


class ECRTM(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        num_topics: int = 50,
        hidden_size: int = 200,
        embed_size: int = 200,
        dropout: float = 0.0,
        beta_temp: float = 0.2,
        ecr_weight: float = 100.0,
        sinkhorn_epsilon: float = 1 / 20,
        sinkhorn_max_iter: int = 1000,
        sinkhorn_stop: float = 0.005,
        word_embeddings: torch.Tensor | None = None,
    ):
        super().__init__()
        self.num_topics, self.beta_temp, self.ecr_weight = num_topics, beta_temp, ecr_weight
        self.sinkhorn = dict(epsilon=sinkhorn_epsilon, max_iter=sinkhorn_max_iter, stop_threshold=sinkhorn_stop)

        self.encoder = nn.Sequential(
            nn.Linear(vocab_size, hidden_size), nn.Softplus(),
            nn.Linear(hidden_size, hidden_size), nn.Softplus(),
            nn.Dropout(dropout),
        )
        self.mean_head = nn.Linear(hidden_size, num_topics)
        self.logvar_head = nn.Linear(hidden_size, num_topics)
        # BatchNorm heads without a learned scale, as in the paper's code: they stop the posterior
        # from collapsing onto the prior early in training
        self.mean_bn = nn.BatchNorm1d(num_topics)
        self.logvar_bn = nn.BatchNorm1d(num_topics)
        self.decoder_bn = nn.BatchNorm1d(vocab_size)
        for bn in (self.mean_bn, self.logvar_bn, self.decoder_bn):
            bn.weight.requires_grad_(False)

        # Laplace approximation of a Dirichlet(α = 1) prior in the softmax basis: mean 0, variance
        # (1/α)(1 − 2/K) + (1/K²) Σ 1/α = 1 − 1/K
        prior_var = 1.0 - 1.0 / num_topics
        self.register_buffer("prior_mean", torch.zeros(num_topics))
        self.register_buffer("prior_var", torch.full((num_topics,), prior_var))

        if word_embeddings is not None:
            if word_embeddings.shape[0] != vocab_size:
                raise ValueError(f"word_embeddings has {word_embeddings.shape[0]} rows for a vocabulary of {vocab_size}")
            words = word_embeddings.detach().clone().float()
        else:
            words = nn.init.trunc_normal_(torch.empty(vocab_size, embed_size), std=0.1)
        self.word_embeddings = nn.Parameter(F.normalize(words))
        topics = nn.init.trunc_normal_(torch.empty(num_topics, words.shape[1]), std=0.1)
        self.topic_embeddings = nn.Parameter(F.normalize(topics))

    def distances(self) -> torch.Tensor:
        """Squared Euclidean distances between topic and word embeddings, (K, V)."""
        return torch.cdist(self.topic_embeddings, self.word_embeddings) ** 2

    def get_beta_logits(self) -> torch.Tensor:
        """``−dist/τ`` (K, V): topic-word logits (a topic's word distribution is their softmax)."""
        return -self.distances() / self.beta_temp

    def get_beta(self) -> torch.Tensor:
        """β (K, V) as the decoder uses it: ``softmax(−dist/τ)`` over topics."""
        return torch.softmax(self.get_beta_logits(), dim=0)

    def get_theta(self, bow: torch.Tensor) -> torch.Tensor:
        """Document-topic proportions θ (B, K); deterministic (z = μ) outside training."""
        theta, _, _ = self._encode(bow)
        return theta

    def _encode(self, bow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.encoder(bow)
        mu = self.mean_bn(self.mean_head(hidden))
        logvar = self.logvar_bn(self.logvar_head(hidden))
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return torch.softmax(z, dim=1), mu, logvar

    def _kl(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) ‖ prior), per document (B,)."""
        var = torch.exp(logvar)
        terms = var / self.prior_var + (mu - self.prior_mean) ** 2 / self.prior_var + torch.log(self.prior_var) - logvar
        return 0.5 * (terms.sum(dim=1) - self.num_topics)

    def forward(self, bow: torch.Tensor) -> dict[str, torch.Tensor]:
        """Losses on a batch of bags of words (B, V): ``loss`` = ``topic_model`` + ``ecr``."""
        theta, mu, logvar = self._encode(bow)
        dist = self.distances()
        beta = torch.softmax(-dist / self.beta_temp, dim=0)
        reconstruction = torch.softmax(self.decoder_bn(theta @ beta), dim=-1)  # (B, V)
        recon_loss = -(bow * torch.log(reconstruction + 1e-10)).sum(dim=1)
        topic_model = (recon_loss + self._kl(mu, logvar)).mean()
        ecr = self.ecr_weight * ecr_loss(dist, **self.sinkhorn) if self.ecr_weight > 0 else dist.new_zeros(())
        return {"loss": topic_model + ecr, "topic_model": topic_model, "ecr": ecr}
