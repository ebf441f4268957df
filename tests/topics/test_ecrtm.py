"""ECRTM: shapes, the topic-word matrices, the losses, and that it learns on a toy corpus."""

import pytest
import torch

from posttrain.topics.ecrtm import ECRTM


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_beta_logits_and_beta():
    torch.manual_seed(0)
    model = ECRTM(vocab_size=10, num_topics=3, embed_size=4)
    logits = model.get_beta_logits()
    assert logits.shape == (3, 10)
    dist = ((model.topic_embeddings[:, None, :] - model.word_embeddings[None, :, :]) ** 2).sum(-1)
    assert torch.allclose(logits, -dist / 0.2, atol=1e-5)
    beta = model.get_beta()
    assert torch.allclose(beta.sum(0), torch.ones(10))  # softmax over topics, as the decoder uses it
    assert torch.allclose(beta, torch.softmax(logits, dim=0))


def test_given_word_embeddings_are_normalised_and_checked():
    words = torch.randn(6, 5) * 3
    model = ECRTM(vocab_size=6, num_topics=2, word_embeddings=words)
    assert torch.allclose(model.word_embeddings.norm(dim=1), torch.ones(6), atol=1e-6)
    assert model.topic_embeddings.shape == (2, 5)
    with pytest.raises(ValueError, match="7 rows for a vocabulary of 6"):
        ECRTM(vocab_size=6, num_topics=2, word_embeddings=torch.randn(7, 5))


def test_forward_losses_and_prior():
    torch.manual_seed(0)
    model = ECRTM(vocab_size=8, num_topics=4, embed_size=3)
    assert torch.allclose(model.prior_var, torch.full((4,), 1 - 1 / 4))  # Dirichlet(1) Laplace approximation
    bow = torch.randint(0, 3, (5, 8)).float()
    out = model(bow)
    assert set(out) == {"loss", "topic_model", "ecr"}
    assert torch.isfinite(out["loss"]) and out["ecr"] > 0
    assert torch.allclose(out["loss"], out["topic_model"] + out["ecr"])
    no_ecr = ECRTM(vocab_size=8, num_topics=4, embed_size=3, ecr_weight=0.0)(bow)
    assert no_ecr["ecr"] == 0


def test_theta_is_a_distribution_and_deterministic_in_eval():
    torch.manual_seed(0)
    model = ECRTM(vocab_size=8, num_topics=4, embed_size=3)
    bow = torch.randint(0, 3, (6, 8)).float()
    model(bow)  # one training-mode pass for the batch-norm statistics
    model.eval()
    theta = model.get_theta(bow)
    assert theta.shape == (6, 4) and torch.allclose(theta.sum(1), torch.ones(6))
    assert torch.equal(theta, model.get_theta(bow))


@pytest.mark.slow
def test_learns_two_separable_topics():
    # documents use either words 0-4 or words 5-9: after training, the two groups' documents get
    # different main topics
    torch.manual_seed(0)
    first = torch.zeros(40, 10)
    first[:, :5] = torch.randint(1, 4, (40, 5)).float()
    second = torch.zeros(40, 10)
    second[:, 5:] = torch.randint(1, 4, (40, 5)).float()
    bow = torch.cat([first, second])
    torch.manual_seed(0)
    model = ECRTM(vocab_size=10, num_topics=2, hidden_size=16, embed_size=8, ecr_weight=1.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(100):
        out = model(bow)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["topic_model"].item())
    assert losses[-1] < losses[0]
    model.eval()
    main = model.get_theta(bow).argmax(1)
    assert {main[:40].float().mean().item(), main[40:].float().mean().item()} == {0.0, 1.0}
