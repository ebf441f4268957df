"""DPO on topic-word distributions, by hand."""

import math

import pytest
import torch

from posttrain.losses.topic_dpo import topic_word_dpo_loss


def log_softmax_row(row):
    total = math.log(sum(math.exp(x) for x in row))
    return [x - total for x in row]


def test_by_hand_against_the_formula():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.5, 1.0, 1.5]], requires_grad=True)
    ref = torch.tensor([[1.0, 1.0, 1.0], [0.0, 2.0, 0.0]])
    topics, winners, losers = torch.tensor([0, 1]), torch.tensor([0, 2]), torch.tensor([2, 1])
    loss = topic_word_dpo_loss(logits, ref, topics, winners, losers, alpha=0.5)

    expected = 0.0
    for k, w, l in zip([0, 1], [0, 2], [2, 1]):
        lp, rp = log_softmax_row(logits[k].tolist()), log_softmax_row(ref[k].tolist())
        margin = (lp[w] - lp[l]) - (rp[w] - rp[l])
        expected += -math.log(1 / (1 + math.exp(-0.5 * margin)))
    assert loss.item() == pytest.approx(expected / 2, rel=1e-6)

    loss.backward()  # the winner's logit goes up, the loser's down
    assert logits.grad[0, 0] < 0 and logits.grad[0, 2] > 0
    assert logits.grad[1, 2] < 0 and logits.grad[1, 1] > 0


def test_equal_to_the_reference_gives_log_two_and_no_gradient_to_the_reference():
    logits = torch.randn(4, 10)
    ref = logits.clone().requires_grad_(True)
    loss = topic_word_dpo_loss(logits, ref, torch.tensor([0, 3]), torch.tensor([1, 2]), torch.tensor([5, 9]), alpha=3.0)
    assert loss.item() == pytest.approx(math.log(2))
    assert not loss.requires_grad  # the reference is frozen


def test_only_the_named_topics_get_gradient():
    logits = torch.randn(3, 6, requires_grad=True)
    topic_word_dpo_loss(logits, torch.randn(3, 6), torch.tensor([1]), torch.tensor([0]), torch.tensor([4])).backward()
    assert logits.grad[0].abs().sum() == 0 and logits.grad[2].abs().sum() == 0 and logits.grad[1].abs().sum() > 0


def log_softmax_column(matrix, w):
    column = [row[w] for row in matrix]
    total = math.log(sum(math.exp(x) for x in column))
    return [x - total for x in column]


def test_beta_distribution_by_hand_softmax_over_topics():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.5, 1.0, 1.5]], requires_grad=True)
    ref = torch.tensor([[1.0, 1.0, 1.0], [0.0, 2.0, 0.0]])
    loss = topic_word_dpo_loss(logits, ref, torch.tensor([0]), torch.tensor([0]), torch.tensor([2]), alpha=2.0, distribution="beta")
    # log β[0, w] = logits[0, w] − log Σ_k exp(logits[k, w]): columns, not rows
    lp0, lp2 = log_softmax_column(logits.tolist(), 0)[0], log_softmax_column(logits.tolist(), 2)[0]
    rp0, rp2 = log_softmax_column(ref.tolist(), 0)[0], log_softmax_column(ref.tolist(), 2)[0]
    margin = (lp0 - lp2) - (rp0 - rp2)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2.0 * margin)), rel=1e-6)

    loss.backward()
    # the winner's column: up in topic 0, down in topic 1; the loser's column the other way;
    # the middle word is not in the triple and its column gets nothing (unlike "words")
    assert logits.grad[0, 0] < 0 and logits.grad[1, 0] > 0
    assert logits.grad[0, 2] > 0 and logits.grad[1, 2] < 0
    assert logits.grad[:, 1].abs().sum() == 0


def test_beta_margin_is_the_gap_that_ranks_the_topics_top_words():
    logits = torch.randn(4, 7)
    ref = torch.zeros(4, 7)  # uniform reference: its gaps are 0
    beta = torch.softmax(logits, dim=0)
    loss = topic_word_dpo_loss(logits, ref, torch.tensor([2]), torch.tensor([3]), torch.tensor([5]), distribution="beta")
    margin = math.log(beta[2, 3] / beta[2, 5])
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-margin)), rel=1e-5)


def test_unknown_distribution_is_refused():
    with pytest.raises(ValueError, match="words, beta"):
        topic_word_dpo_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0]), torch.tensor([0]), torch.tensor([1]), distribution="topics")
