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
