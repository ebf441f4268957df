"""posttrain sdpo / grpo on TRL's GRPOTrainer: config checks, teacher prompts per sample,
the loss and its mixing with GRPO, every teacher kind, checkpoints and resume, CLI, 2 processes."""

import dataclasses
import json
import math
import re
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from trl import GRPOConfig, GRPOTrainer

from posttrain.cli import main
from posttrain.commands.sdpo import GRPOJobConfig, SDPOJobConfig, build_sdpo_trainer, prompt_dataset, run_grpo, run_sdpo
from posttrain.config import load_config
from posttrain.data.jsonl import write_jsonl
from posttrain.errors import ConfigError, DataError, PosttrainError
from posttrain.losses import self_distillation_loss
from posttrain.models import load_model, load_tokenizer
from posttrain.tasks import Feedback
from posttrain.tasks.sources import load_rows
from posttrain.trainers.rewards import FeedbackReward, message_text
from posttrain.trainers.sdpo import SDPOSettings, SDPOTrainer
from posttrain.trainers.teachers import TEACHER_ADAPTER, LiveTeacher, TeacherStepCallback

G = 4  # num_generations everywhere but the 2-process run
DISTILLATION_METRICS = ("self_distillation/loss", "self_distillation/kl", "self_distillation/signal_fraction")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny model runs fastest on one thread, and far faster than two on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sdpo_config(model_dir, out, cls=SDPOJobConfig, **values):
    defaults = {"model_name_or_path": model_dir, "output_dir": str(out), "dataset_name": "task:arithmetic",
                "dataset_train_split": "train[:32]", "num_generations": G, "max_completion_length": 12,
                "per_device_train_batch_size": 8, "max_steps": 2, "learning_rate": 1e-3, "logging_steps": 1,
                "save_strategy": "no", "seed": 0}
    return load_config(cls, values={**defaults, **values})


def logged_steps(out):
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "loss" in row]


@pytest.fixture(scope="module")
def prompts():
    return prompt_dataset(load_rows("task:arithmetic", "train[:8]"))


def direct_trainer(model_dir, out, dataset, reward_funcs, temperature=1.0, **sdpo):
    """An SDPOTrainer built by hand (custom reward functions, no config file)."""
    args = GRPOConfig(output_dir=str(out), per_device_train_batch_size=8, num_generations=G, max_completion_length=12,
                      temperature=temperature, max_steps=1, logging_steps=1, save_strategy="no", use_cpu=True,
                      report_to="none", seed=0)
    return SDPOTrainer(model=load_model(model_dir), reward_funcs=reward_funcs, args=args, train_dataset=dataset,
                       processing_class=load_tokenizer(model_dir), sdpo=SDPOSettings(**sdpo))


def group_rows(dataset, groups=2):
    """A generation batch as GRPO's sampler lays it out: each row repeated G times, consecutively."""
    return [dataset[i] for i in range(groups) for _ in range(G)]


def generate(trainer, rows):
    trainer.model.train()
    return trainer._generate_and_score_completions(rows)


def completion_texts(trainer, batch):
    tokenizer = trainer.processing_class
    return [tokenizer.decode(ids[mask.bool()], skip_special_tokens=True) for ids, mask in zip(batch["completion_ids"], batch["completion_mask"])]


def teacher_prompts(trainer, batch):
    tokenizer = trainer.processing_class
    return [tokenizer.decode(ids[mask.bool()]) for ids, mask in zip(batch["teacher_prompt_ids"], batch["teacher_prompt_mask"])]


def unpadded(ids, mask):
    return ids[mask.bool()].tolist()


def fingerprint(text):
    return f"<fp:{zlib.crc32(text.encode()):08x}>"


def fingerprint_feedback(prompts, completions, **kwargs):
    """Reward 0 and feedback naming exactly the completion it was given."""
    return [(0.0, fingerprint(message_text(c))) for c in completions]


def first_of_group_succeeds(prompts, completions, **kwargs):
    return [1.0 if i % G == 0 else 0.0 for i in range(len(completions))]


# -- config validation: before any model is loaded --------------------------------------------


@pytest.mark.parametrize(
    "values, message",
    [
        ({"distillation_alpha": -0.1}, "'distillation_alpha' must be >= 0"),
        ({"distillation_alpha": 1.5}, "'distillation_alpha' must be <= 1"),
        ({"distillation_topk": 0, "distillation_alpha": 0.5}, "sampled-token mode .* distillation_alpha: 1.0"),
        ({"distillation_topk": -1}, "'distillation_topk' must be >= 0"),
        ({"teacher": "lora_ema"}, "teacher 'lora_ema' .* use_peft: true"),
        ({"teacher": "average"}, "'teacher'.*must be one of frozen, ema, trust_region, lora_ema, live"),
        ({"base_model_mode": True}, "needs a chat model"),
        ({"grpo_weight": 1.5}, "'grpo_weight' must be <= 1"),
        ({"grpo_mixing": "advantage"}, "set distillation_topk: 0"),
        ({"grpo_mixing": "advantage", "distillation_topk": 0, "distillation_alpha": 1.0, "distillation_aggregation": "sequence_mean"},
         "set distillation_aggregation: token_mean"),
        ({"grpo_mixing": "reward"}, "grpo_mixing"),
        ({"grpo_weight": -0.5}, "'grpo_weight' must be >= 0"),
        ({"num_generations": 1}, "'num_generations' must be >= 2"),
        ({"distillation_is_clip": 0}, "'distillation_is_clip' must be > 0"),
        ({"distillation_span": "some"}, "'distillation_span'.*must be one of all, to_divergence"),
    ],
)
def test_bad_sdpo_config_values(values, message):
    with pytest.raises(ConfigError, match=message):
        sdpo_config("/no/model/is/loaded", "/no/output", **values)


def test_sampled_token_mode_with_reverse_kl_is_accepted():
    config = sdpo_config("/no/model/is/loaded", "/no/output", distillation_topk=0, distillation_alpha=1.0)
    assert (config.distillation_topk, config.distillation_alpha) == (0, 1.0)
    assert sdpo_config("m", "o", teacher="lora_ema", use_peft=True).teacher == "lora_ema"


def test_grpo_config_is_always_plain_grpo():
    assert sdpo_config("m", "o", cls=GRPOJobConfig).grpo_weight == 1.0
    assert sdpo_config("m", "o", cls=GRPOJobConfig, grpo_weight=0.5).grpo_weight == 1.0  # an SDPO config's λ is replaced
    with pytest.raises(ConfigError, match="'distillation_alpha' must be <= 1"):  # the rest is still checked
        sdpo_config("m", "o", cls=GRPOJobConfig, distillation_alpha=1.5)


def test_topk_larger_than_the_vocabulary_is_refused_at_build_time(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"'distillation_topk' \(5000\) exceeds the vocabulary \(\d+\)"):
        build_sdpo_trainer(sdpo_config(tiny_model_dir, tmp_path, distillation_topk=5000))


REWARD_MODULE = '''
def broken(prompts, completions, **kwargs):
    raise KeyError("solution")


def too_few(prompts, completions, **kwargs):
    return [1.0]


def nonempty(prompts, completions, **kwargs):
    return [(float(bool(c[-1]["content"])), "say something") for c in completions]


def curriculum(prompts, completions, trainer_state, **kwargs):  # TRL passes trainer_state to every reward call
    return [1.0 if trainer_state.global_step >= 0 else 0.0 for _ in completions]
'''


@pytest.fixture
def reward_module(importable_module):
    return importable_module(REWARD_MODULE)


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    write_jsonl(path, [{"prompt": f"What is {i} + {i + 1}?", "level": i} for i in range(1, 5)])
    return str(path)


@pytest.fixture
def no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the config error")

    monkeypatch.setattr("posttrain.commands.sdpo.load_model_for_training", refuse)


def test_jsonl_prompts_need_reward_functions(tiny_model_dir, tmp_path, prompt_file, no_model_loading):
    with pytest.raises(ConfigError, match="'reward_functions' is empty"):
        build_sdpo_trainer(sdpo_config(tiny_model_dir, tmp_path / "out", dataset_name=prompt_file))


@pytest.mark.parametrize(
    "function, error, message",
    [
        ("broken", ConfigError, r"reward function 'broken' fails on the first rows: KeyError: 'solution'"),
        ("too_few", PosttrainError, r"reward function 'too_few' returned 1 values for 2 completions"),
        ("missing", ConfigError, r"has no function 'missing'"),
    ],
)
def test_bad_reward_function_fails_before_the_model_loads(tiny_model_dir, tmp_path, prompt_file, reward_module,
                                                         no_model_loading, function, error, message):
    config = sdpo_config(tiny_model_dir, tmp_path / "out", dataset_name=prompt_file, reward_functions=[f"{reward_module}:{function}"])
    with pytest.raises(error, match=message):
        build_sdpo_trainer(config)
    assert not (tmp_path / "out").exists()


def test_custom_reward_function_on_jsonl_prompts_trains(tiny_model_dir, tmp_path, prompt_file, reward_module):
    config = sdpo_config(tiny_model_dir, tmp_path / "out", dataset_name=prompt_file, reward_functions=[f"{reward_module}:nonempty"],
                         max_steps=1, teacher="frozen")
    trainer = build_sdpo_trainer(config)
    assert [f.__name__ for f in trainer.reward_funcs] == ["nonempty"]
    assert all(isinstance(f, FeedbackReward) for f in trainer.reward_funcs)
    assert set(trainer.train_dataset.column_names) == {"prompt", "level"}
    trainer.train()
    (row,) = logged_steps(tmp_path / "out")
    assert math.isfinite(row["loss"]) and "rewards/nonempty/mean" in row


def test_reward_function_using_trainer_state_passes_the_check(tiny_model_dir, tmp_path, prompt_file, reward_module):
    config = sdpo_config(tiny_model_dir, tmp_path / "out", dataset_name=prompt_file, reward_functions=[f"{reward_module}:curriculum"])
    assert build_sdpo_trainer(config).reward_funcs[0].__name__ == "curriculum"


def test_async_reward_function_works_as_in_trl(tiny_model_dir, tmp_path, prompts):
    async def half(prompts, completions, **kwargs):
        return [0.5 for _ in completions]

    trainer = direct_trainer(tiny_model_dir, tmp_path, prompts, [half])
    generate(trainer, group_rows(prompts))
    assert trainer._metrics["train"]["reward"][-1] == pytest.approx(0.5)


# -- teacher prompts: each sample gets its own feedback and its group's demonstration -----------


def test_feedback_reaches_exactly_its_own_sample(tiny_model_dir, tmp_path, prompts):
    trainer = direct_trainer(tiny_model_dir, tmp_path, prompts, [fingerprint_feedback])
    rows = group_rows(prompts)
    batch = generate(trainer, rows)
    texts, teachers = completion_texts(trainer, batch), teacher_prompts(trainer, batch)
    marks = [fingerprint(t) for t in texts]
    assert len(set(marks)) > 1  # distinct completions, so a mix-up would show
    for i, teacher in enumerate(teachers):
        assert rows[i]["prompt"][-1]["content"] in teacher
        assert marks[i] in teacher and teacher.count("<fp:") == 1, (i, teacher)
        assert "Correct solution" not in teacher  # every reward is 0: no demonstration
    assert batch["self_distillation_mask"].tolist() == [1.0] * len(rows)
    # the padded teacher prompt stays a proper left-padded batch
    assert batch["teacher_prompt_ids"].shape == batch["teacher_prompt_mask"].shape
    assert (batch["teacher_prompt_mask"][:, -1] == 1).all()


def test_shuffled_training_batch_keeps_teacher_prompts_with_their_samples(tiny_model_dir, tmp_path, prompts):
    trainer = direct_trainer(tiny_model_dir, tmp_path, prompts, [fingerprint_feedback])
    trainer.model.train()
    torch.manual_seed(3)
    batch = trainer._prepare_inputs(group_rows(prompts))  # generate, then TRL shuffles and splits
    tokenizer = trainer.processing_class
    texts, teachers = completion_texts(trainer, batch), teacher_prompts(trainer, batch)
    questions = [tokenizer.decode(unpadded(ids, mask)) for ids, mask in zip(batch["prompt_ids"], batch["prompt_mask"])]
    for question, text, teacher in zip(questions, texts, teachers):
        asked = question.split("user\n")[1].split("<|im_end|>")[0]
        assert asked.startswith("What is ") and asked in teacher
        assert fingerprint(text) in teacher and teacher.count("<fp:") == 1


def test_feedback_of_several_reward_functions_is_joined(tiny_model_dir, tmp_path, prompts):
    def first(prompts, completions, **kwargs):
        return [(0.0, "first" + fingerprint(message_text(c))) for c in completions]

    def silent(prompts, completions, **kwargs):
        return [0.0 for _ in completions]

    def second(prompts, completions, **kwargs):
        return [(0.0, "second" + fingerprint(message_text(c))) for c in completions]

    trainer = direct_trainer(tiny_model_dir, tmp_path, prompts, [first, silent, second])
    batch = generate(trainer, group_rows(prompts))
    for text, teacher in zip(completion_texts(trainer, batch), teacher_prompts(trainer, batch)):
        mark = fingerprint(text)
        assert f"first{mark}\n\nsecond{mark}" in teacher


@pytest.mark.parametrize("exclude_self", [True, False])
def test_first_success_of_the_group_is_the_demonstration(tiny_model_dir, tmp_path, prompts, exclude_self):
    trainer = direct_trainer(tiny_model_dir, tmp_path, prompts, [first_of_group_succeeds],
                             dont_reprompt_on_self_success=exclude_self)
    rows = group_rows(prompts)
    batch = generate(trainer, rows)
    texts, teachers = completion_texts(trainer, batch), teacher_prompts(trainer, batch)
    mask = batch["self_distillation_mask"].tolist()
    assert len({texts[i] for i in range(G)}) > 1  # the demonstration is distinguishable from the others
    for i, teacher in enumerate(teachers):
        demonstration = texts[i - i % G]
        if i % G == 0 and exclude_self:  # its own success does not count, and no sibling succeeded
            assert mask[i] == 0.0
            assert "Correct solution" not in teacher
            assert unpadded(batch["teacher_prompt_ids"][i], batch["teacher_prompt_mask"][i]) == unpadded(batch["prompt_ids"][i], batch["prompt_mask"][i])
        else:
            assert mask[i] == 1.0
            assert teacher.count("Correct solution:") == 1
            assert f"Correct solution:\n\n{demonstration}\n\n" in teacher, (i, teacher)
            assert rows[i]["prompt"][-1]["content"] in teacher
    expected_fraction = (len(rows) - 2) / len(rows) if exclude_self else 1.0
    assert trainer._metrics["train"]["self_distillation/signal_fraction"][-1] == pytest.approx(expected_fraction)


@pytest.mark.parametrize("span", ["all", "to_divergence"])
def test_distillation_span_stops_at_the_first_token_that_leaves_the_demonstration(tiny_model_dir, tmp_path, prompts, span, monkeypatch):
    from posttrain.trainers import sdpo as sdpo_module

    trainer = direct_trainer(tiny_model_dir, tmp_path, prompts, [first_of_group_succeeds], distillation_span=span)
    batch = generate(trainer, group_rows(prompts))
    ids = [unpadded(i, m) for i, m in zip(batch["completion_ids"], batch["completion_mask"])]
    expected = []
    for i, own in enumerate(ids):
        demonstration = ids[i - i % G] if i % G else None  # sample 0 of each group succeeded; it has no teacher
        if span == "all" or demonstration is None:
            expected.append(len(own))
            continue
        position = next((p for p, token in enumerate(own) if p >= len(demonstration) or token != demonstration[p]), None)
        expected.append(len(own) if position is None else position + 1)
    assert batch["self_distillation_tokens"].tolist() == expected
    if span == "to_divergence":
        assert any(e < len(own) for e, own in zip(expected, ids))  # some samples are cut short

    seen = {}
    chunked, loss = sdpo_module.distillation_inputs_in_chunks, sdpo_module.self_distillation_loss

    def chunked_spy(student_states, student_logits, teacher_logits, completion_ids, **kwargs):
        seen["tokens"] = completion_ids.tolist()
        return chunked(student_states, student_logits, teacher_logits, completion_ids, **kwargs)

    def loss_spy(student_log_probs, teacher_log_probs, response_mask, **kwargs):
        seen["mask"] = response_mask.tolist()
        return loss(student_log_probs, teacher_log_probs, response_mask, **kwargs)

    monkeypatch.setattr(sdpo_module, "distillation_inputs_in_chunks", chunked_spy)
    monkeypatch.setattr(sdpo_module, "self_distillation_loss", loss_spy)
    trainer.current_gradient_accumulation_steps = 1
    trainer._self_distillation_loss(trainer.model, batch)
    # The loss sees exactly those leading tokens of each sample that has a teacher, in batch order
    distilled = [token for i, own in enumerate(ids) if i % G for token in own[: expected[i]]]
    assert seen["tokens"] == [distilled]
    assert seen["mask"] == [[1] * len(distilled)]


ERROR_AT = 3  # where the feedback below says every completion first goes wrong


def located_feedback(prompts, completions, **kwargs):
    """Every completion fails; the feedback locates its first error at character ERROR_AT."""
    return [(0.0, Feedback("wrong from the fourth character on", error_at=ERROR_AT)) for _ in completions]


def unlocated_feedback(prompts, completions, **kwargs):
    return [(0.0, "wrong somewhere") for _ in completions]


@pytest.mark.parametrize("reward", [located_feedback, unlocated_feedback])
def test_to_divergence_on_feedback_stops_at_the_token_the_verifier_names(tiny_model_dir, tmp_path, prompts, reward):
    """Groups where every sample failed: the teacher has feedback only, and to_divergence distils up
    to and including the token holding the character the Feedback names (found here by decoding
    one more token at a time); feedback that names no place distils every token."""
    trainer = direct_trainer(tiny_model_dir, tmp_path, prompts, [reward], distillation_span="to_divergence")
    batch = generate(trainer, group_rows(prompts))
    tokenizer = trainer.processing_class
    ids = [unpadded(i, m) for i, m in zip(batch["completion_ids"], batch["completion_mask"])]
    assert batch["self_distillation_mask"].tolist() == [1.0] * len(ids)  # feedback is every sample's signal
    expected = []
    for own in ids:
        holding = next((j for j in range(len(own)) if len(tokenizer.decode(own[: j + 1], skip_special_tokens=True)) > ERROR_AT), None)
        expected.append(len(own) if reward is unlocated_feedback or holding is None else holding + 1)
    assert batch["self_distillation_tokens"].tolist() == expected
    if reward is located_feedback:
        assert any(e < len(own) for e, own in zip(expected, ids))  # cut short where the error is


# -- the distillation loss: student log-probs, live teacher, mixing with GRPO -----------------------


def test_student_log_probs_match_trls(tiny_model_dir, tmp_path, prompts, monkeypatch):
    from posttrain.trainers import sdpo as sdpo_module

    seen = {}
    original = sdpo_module.self_distillation_loss

    def spy(student_log_probs, teacher_log_probs, response_mask, **kwargs):
        seen["student"] = student_log_probs.detach().clone()
        return original(student_log_probs, teacher_log_probs, response_mask, **kwargs)

    monkeypatch.setattr(sdpo_module, "self_distillation_loss", spy)
    trainer = direct_trainer(tiny_model_dir, tmp_path, prompts, [fingerprint_feedback], temperature=0.7)
    batch = generate(trainer, group_rows(prompts))
    trainer.current_gradient_accumulation_steps = 1  # set by the Trainer's loop during training
    trainer._self_distillation_loss(trainer.model, batch)

    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    n = batch["completion_ids"].size(1)
    with torch.no_grad():
        trl_log_probs, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, input_ids, attention_mask, n)
    assert trainer._head_outside_forward  # the chunked path ran: the head was reproduced outside the forward
    keep = batch["completion_mask"].bool() & batch["self_distillation_mask"].bool()[:, None]
    assert keep.sum() > 0
    torch.testing.assert_close(seen["student"], trl_log_probs[keep][None], atol=1e-5, rtol=1e-5)


def full_log_probs(trainer, batch):
    """The student's and the teacher's whole ``(B, n, V)`` completion log-probs, as SDPO computed
    them before chunking (the teacher's weights as each kind chooses them)."""
    n = batch["completion_ids"].size(1)

    def completion_logits(weights, prefix):
        ids = torch.cat([batch[f"{prefix}_ids"], batch["completion_ids"]], dim=1)
        mask = torch.cat([batch[f"{prefix}_mask"], batch["completion_mask"]], dim=1)
        return weights(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, -(n + 1):-1].float() / trainer.temperature

    student = torch.log_softmax(completion_logits(trainer.model, "prompt"), dim=-1)
    with torch.no_grad():
        logits = trainer.teacher.logits(trainer.model, lambda w: (lambda chunk, full=completion_logits(w, "teacher_prompt"): full))
        teacher = torch.log_softmax(logits(slice(None)), dim=-1)
    return student, teacher


def full_logits_loss(trainer, batch):
    """The distillation loss as it was before chunking, written out here: both models' whole
    ``(B, n, V)`` completion logits, the student's top-k from them, the (B, n) masks."""
    n = batch["completion_ids"].size(1)
    settings, sampled = trainer.sdpo, batch["completion_ids"].unsqueeze(-1)
    student, teacher = full_log_probs(trainer, batch)
    indices = student.detach().topk(settings.distillation_topk, dim=-1).indices if settings.distillation_topk else None
    positions = torch.arange(n)
    mask = batch["completion_mask"] * (positions[None, :] < batch["self_distillation_tokens"][:, None])
    loss, _ = self_distillation_loss(
        student.gather(-1, sampled).squeeze(-1), teacher.gather(-1, sampled).squeeze(-1), mask,
        student_topk_log_probs=student.gather(-1, indices) if indices is not None else None,
        teacher_topk_log_probs=teacher.gather(-1, indices) if indices is not None else None,
        alpha=settings.distillation_alpha, is_clip=settings.distillation_is_clip, add_tail=settings.distillation_add_tail,
        old_log_probs=batch.get("old_per_token_logps"), sample_mask=batch["self_distillation_mask"],
    )
    return loss


def float32_trainer(model_dir, out, dataset, teacher, **sdpo):
    """An SDPOTrainer without bf16 autocast, so that two computations of the loss can agree to float32
    rounding; with ``lora_ema`` its student is a LoRA model (TRL refuses an adapter on the head)."""
    from peft import LoraConfig, get_peft_model

    model = load_model(model_dir)
    if teacher == "lora_ema":
        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    args = GRPOConfig(output_dir=str(out), per_device_train_batch_size=8, num_generations=G, max_completion_length=12,
                      max_steps=1, save_strategy="no", use_cpu=True, bf16=False, report_to="none", seed=0)
    trainer = SDPOTrainer(model=model, reward_funcs=[first_of_group_succeeds], args=args, train_dataset=dataset,
                          processing_class=load_tokenizer(model_dir), sdpo=SDPOSettings(teacher=teacher, **sdpo))
    with torch.no_grad():  # a teacher that differs from the student, so that there is something to distil
        for name, param in trainer.model.named_parameters():
            if param.requires_grad:
                param.add_(0.02 * torch.randn_like(param))
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def loss_and_gradients(trainer, loss_fn, batch):
    trainer.model.zero_grad()
    loss = loss_fn(trainer, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


def assert_same_loss_and_gradients(trainer, loss_fn, expected_fn, batch):
    """``loss_fn`` (the trainer's) and ``expected_fn`` (written out in the test) give one non-zero
    loss and the same gradients, to float32 rounding."""
    loss, grads = loss_and_gradients(trainer, loss_fn, batch)
    expected, expected_grads = loss_and_gradients(trainer, expected_fn, batch)
    assert loss.item() != 0.0
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-7)
    assert grads.keys() == expected_grads.keys() and grads
    for name in expected_grads:
        torch.testing.assert_close(grads[name], expected_grads[name], rtol=1e-4, atol=1e-7, msg=name)


MODES = {  # (topk, add_tail, alpha)
    "topk-tail-jsd": {"distillation_topk": 5, "distillation_add_tail": True, "distillation_alpha": 0.5},
    "topk-renormalised-forward-kl": {"distillation_topk": 5, "distillation_add_tail": False, "distillation_alpha": 0.0},
    "topk-tail-reverse-kl": {"distillation_topk": 5, "distillation_add_tail": True, "distillation_alpha": 1.0},
    "sampled-token": {"distillation_topk": 0, "distillation_alpha": 1.0},
}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("teacher", ["frozen", "ema", "trust_region", "lora_ema", "live"])
def test_chunked_distillation_equals_the_full_logits_loss(tiny_model_dir, tmp_path, prompts, teacher, mode):
    torch.manual_seed(0)
    trainer = float32_trainer(tiny_model_dir, tmp_path, prompts, teacher, distillation_chunk_size=3, **MODES[mode])
    batch = generate(trainer, group_rows(prompts))
    with torch.no_grad():  # a stale sampler: the importance weights, some clipped, enter both losses
        n = batch["completion_ids"].size(1)
        batch["old_per_token_logps"] = torch.randn(len(batch["completion_ids"]), n) * 0.5 - 2.0
    assert 0 < batch["self_distillation_mask"].sum() < len(batch["self_distillation_mask"])  # some samples have no teacher

    assert_same_loss_and_gradients(trainer, lambda t, b: t._self_distillation_loss(t.model, b), full_logits_loss, batch)
    assert trainer._head_outside_forward  # the chunked path, not the fallback


def test_a_head_that_is_not_reproduced_falls_back_to_the_full_logits(tiny_model_dir, tmp_path, prompts, monkeypatch, caplog):
    from posttrain.models.output_head import OutputHead

    trainer = float32_trainer(tiny_model_dir, tmp_path, prompts, "frozen", distillation_chunk_size=3)
    batch = generate(trainer, group_rows(prompts))
    monkeypatch.setattr(OutputHead, "__call__", lambda self, hidden: 2.0 * self.model.get_output_embeddings()(hidden))
    chunked, chunked_grads = loss_and_gradients(trainer, lambda t, b: t._self_distillation_loss(t.model, b), batch)
    assert trainer._head_outside_forward is False and "not reproduced outside its forward" in caplog.text
    full, full_grads = loss_and_gradients(trainer, full_logits_loss, batch)
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-7)
    for name in full_grads:
        torch.testing.assert_close(chunked_grads[name], full_grads[name], rtol=1e-4, atol=1e-7, msg=name)


def test_a_batch_without_any_teacher_signal_gives_a_zero_loss_that_backpropagates(tiny_model_dir, tmp_path, prompts):
    trainer = float32_trainer(tiny_model_dir, tmp_path, prompts, "frozen")
    batch = generate(trainer, group_rows(prompts))
    batch["self_distillation_mask"] = torch.zeros_like(batch["self_distillation_mask"])
    loss, grads = loss_and_gradients(trainer, lambda t, b: t._self_distillation_loss(t.model, b), batch)
    assert loss.item() == 0.0 and grads  # backward ran (a DDP step would sync), with nothing to learn
    assert all(g.abs().max() == 0 for g in grads.values())


@pytest.mark.parametrize("split", ["processes", "micro-batches"])
@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean"])
def test_halves_holding_different_token_counts_give_the_whole_batchs_gradient(tiny_model_dir, tmp_path, prompts, monkeypatch, split, aggregation):
    """Each part divides its summed loss by the whole generation batch's distilled-token count, or
    sample count (over the number of processes, whose gradients DDP averages; times the
    micro-batches of gradient accumulation per generation, whose gradients add up): the step is
    one mean over the whole batch."""
    trainer = float32_trainer(tiny_model_dir, tmp_path, prompts, "frozen", distillation_aggregation=aggregation)
    batch = generate(trainer, group_rows(prompts))  # 8 samples: halves 0-3 and 4-7
    batch["self_distillation_mask"] = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    batch["num_distilled_tokens"] = (batch["self_distillation_mask"] * batch["self_distillation_tokens"]).sum()
    counts = [(batch["self_distillation_mask"] * batch["self_distillation_tokens"])[half].sum().item() for half in (slice(0, 4), slice(4, 8))]
    assert counts[0] > 2 * counts[1] > 0  # unequal: a token mean per part would weigh the second part's tokens more
    _, whole = loss_and_gradients(trainer, lambda t, b: t._self_distillation_loss(t.model, b), batch)

    if split == "processes":
        monkeypatch.setattr(type(trainer.accelerator), "num_processes", property(lambda self: 2))
    else:
        trainer.current_gradient_accumulation_steps = trainer.args.steps_per_generation = 2
    parts = []
    for half in (slice(0, 4), slice(4, 8)):
        local = {k: (v[half] if isinstance(v, torch.Tensor) and v.ndim > 0 else v) for k, v in batch.items()}
        parts.append(loss_and_gradients(trainer, lambda t, b: t._self_distillation_loss(t.model, b), local)[1])
    combine = 0.5 if split == "processes" else 1.0  # DDP averages; accumulation sums
    for name, gradient in whole.items():
        torch.testing.assert_close(combine * (parts[0][name] + parts[1][name]), gradient, rtol=1e-4, atol=1e-8, msg=name)


def test_sequence_mean_is_the_mean_of_each_samples_token_mean(tiny_model_dir, tmp_path, prompts):
    """The reference's aggregation (lasgroup/SDPO, one sample per micro-batch): each sample's own
    token mean, written out here with the full-logits loss of that sample alone, averaged over all
    8 samples, those without a teacher signal counting 0 (they dilute the step)."""
    trainer = float32_trainer(tiny_model_dir, tmp_path, prompts, "frozen", distillation_aggregation="sequence_mean")
    batch = generate(trainer, group_rows(prompts))
    assert batch["num_samples"].item() == 8 and 0 < batch["self_distillation_mask"].sum() < 8
    # distil unequal spans (as distillation_span: to_divergence does), so that samples' token means weigh differently
    batch["self_distillation_tokens"] = torch.tensor([2, 12, 5, 12, 7, 3, 12, 9])
    with torch.no_grad():
        ours = trainer._self_distillation_loss(trainer.model, batch)
        one = lambda i: {k: (v[i:i + 1] if isinstance(v, torch.Tensor) and v.ndim > 0 else v) for k, v in batch.items()}
        expected = sum(full_logits_loss(trainer, one(i)) for i in range(8)) / 8
        token_mean = full_logits_loss(trainer, batch)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)
    assert abs(ours.item() - token_mean.item()) > 1e-3 * abs(token_mean.item())


def test_vllms_sampler_ratio_weights_the_distilled_tokens(tiny_model_dir, tmp_path, prompts):
    """TRL's trainer/sampler ratio of vLLM samples (here per sequence, as its default
    ``sequence_mask`` gives it) multiplies each distilled token's loss: a ratio of 2 doubles the
    loss, a masked sequence (ratio 0) drops out of the sum but not out of the token count."""
    trainer = float32_trainer(tiny_model_dir, tmp_path, prompts, "frozen")
    batch = generate(trainer, group_rows(prompts))
    distill = lambda b: trainer._self_distillation_loss(trainer.model, b).item()
    plain = distill(batch)
    assert distill({**batch, "importance_sampling_ratio": torch.full((8, 1), 2.0)}) == pytest.approx(2 * plain, rel=1e-6)
    masked = distill({**batch, "importance_sampling_ratio": torch.tensor([[1.0]] * 4 + [[0.0]] * 4)})
    without = distill({**batch, "self_distillation_mask": batch["self_distillation_mask"] * torch.tensor([1.0] * 4 + [0.0] * 4)})
    assert masked == pytest.approx(without, rel=1e-6) and masked != pytest.approx(plain)
    n = batch["completion_ids"].size(1)
    per_token = torch.ones(8, n)
    per_token[:, 1:] = 0.0  # only each sample's first token counts
    first_only = distill({**batch, "importance_sampling_ratio": per_token})
    # ... the same sum as distilling only the first tokens, over the batch's own (unchanged) token count
    first_tokens = {**batch, "self_distillation_tokens": torch.ones_like(batch["self_distillation_tokens"])}
    assert first_only == pytest.approx(distill(first_tokens), rel=1e-5) and first_only != pytest.approx(plain)


def test_live_teacher_on_the_students_own_prompt_has_nothing_to_teach(tiny_model_dir, tmp_path, prompts):
    trainer = direct_trainer(tiny_model_dir, tmp_path, prompts, [fingerprint_feedback], teacher="live")
    assert isinstance(trainer.teacher, LiveTeacher)
    batch = generate(trainer, group_rows(prompts))
    trainer.current_gradient_accumulation_steps = 1
    same = {**batch, "teacher_prompt_ids": batch["prompt_ids"], "teacher_prompt_mask": batch["prompt_mask"],
            "self_distillation_mask": torch.ones(len(batch["prompt_ids"]))}

    trainer.model.zero_grad()
    loss = trainer._self_distillation_loss(trainer.model, same)
    loss.backward()
    assert abs(loss.item()) < 1e-6
    assert max(p.grad.abs().max().item() for p in trainer.model.parameters() if p.grad is not None) < 1e-6

    trainer.model.zero_grad()
    reprompted = trainer._self_distillation_loss(trainer.model, batch)  # feedback in the teacher's context
    reprompted.backward()
    assert reprompted.item() > 1e-5
    assert max(p.grad.abs().max().item() for p in trainer.model.parameters() if p.grad is not None) > 1e-6


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.5])
def test_loss_is_the_weighted_mix_of_grpo_and_distillation(tiny_model_dir, tmp_path, prompts, weight):
    trainer = direct_trainer(tiny_model_dir, tmp_path, prompts, [fingerprint_feedback], grpo_weight=weight)
    batch = generate(trainer, group_rows(prompts))
    batch["advantages"] = torch.linspace(-1.0, 1.5, len(batch["advantages"]))  # a non-zero GRPO term
    trainer.current_gradient_accumulation_steps = 1
    mixed = trainer._compute_loss(trainer.model, batch)
    grpo = GRPOTrainer._compute_loss(trainer, trainer.model, batch)
    distillation = trainer._self_distillation_loss(trainer.model, batch)
    assert abs(grpo.item()) > 1e-3 and distillation.item() > 1e-6
    torch.testing.assert_close(mixed, weight * grpo + (1 - weight) * distillation, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("weight", [0.0, 0.4])
def test_advantage_mixing_is_one_policy_gradient_on_both_advantages(tiny_model_dir, tmp_path, prompts, weight):
    """``grpo_mixing: advantage``: each sample's advantage is r − its group's mean (worked out here
    from the rewards: 1 for the first of each group of G, else 0), and the loss, written out from the
    full logits, is −Σ_t A_t·log s(y_t) over every response token / their count, with
    A_t = λ·(r − mean) + (1−λ)·(log t − log s) on distilled tokens; its gradients too. At λ = 0 it
    is the sampled-token SDPO loss."""
    sampled_token = {"distillation_topk": 0, "distillation_alpha": 1.0}
    trainer = float32_trainer(tiny_model_dir, tmp_path, prompts, "frozen", grpo_mixing="advantage", grpo_weight=weight, **sampled_token)
    batch = generate(trainer, group_rows(prompts))
    if weight == 0.0:  # nothing of GRPO: the trainer computes no reward advantages
        assert not trainer.mixes_advantages and "reward_advantages" not in batch
        assert_same_loss_and_gradients(trainer, lambda t, b: t._compute_loss(t.model, b), full_logits_loss, batch)
        return
    assert batch["reward_advantages"].tolist() == pytest.approx([1 - 1 / G if i % G == 0 else -1 / G for i in range(2 * G)])
    assert 0 < batch["self_distillation_mask"].sum() < 2 * G  # the groups' failures have a teacher, the successes not

    def written_out(trainer, batch):
        student, teacher = full_log_probs(trainer, batch)
        sampled = batch["completion_ids"].unsqueeze(-1)
        s, t = student.gather(-1, sampled).squeeze(-1), teacher.gather(-1, sampled).squeeze(-1)
        response = batch["completion_mask"].float()
        positions = torch.arange(s.size(1))
        distilled = response * (positions[None, :] < batch["self_distillation_tokens"][:, None]) * batch["self_distillation_mask"][:, None]
        advantage = weight * batch["reward_advantages"][:, None] + (1 - weight) * distilled * (t - s).detach()
        return -(advantage * s * response).sum() / response.sum()

    assert_same_loss_and_gradients(trainer, lambda t, b: t._compute_loss(t.model, b), written_out, batch)
    assert trainer._metrics["train"]["self_distillation/entropy"][-1] > 0


def test_grpo_weight_one_builds_no_teacher(tiny_model_dir, tmp_path, prompts):
    trainer = direct_trainer(tiny_model_dir, tmp_path, prompts, [first_of_group_succeeds], grpo_weight=1.0)
    assert trainer.teacher is None and not trainer.distills
    assert not [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, TeacherStepCallback)]
    batch = generate(trainer, group_rows(prompts))
    assert not {"teacher_prompt_ids", "teacher_prompt_mask", "self_distillation_mask"} & set(batch)
    trainer.current_gradient_accumulation_steps = 1
    batch["advantages"] = torch.linspace(-1.0, 1.5, len(batch["advantages"]))
    torch.testing.assert_close(trainer._compute_loss(trainer.model, batch), GRPOTrainer._compute_loss(trainer, trainer.model, batch))


@pytest.mark.slow
def test_posttrain_grpo_trains_without_distillation_metrics(tiny_model_dir, tmp_path):
    metrics = run_grpo(sdpo_config(tiny_model_dir, tmp_path, cls=GRPOJobConfig))
    assert metrics["global_step"] == 2
    rows = logged_steps(tmp_path)
    assert len(rows) == 2
    for row in rows:
        assert math.isfinite(row["loss"]) and {"reward", "reward_std", "completions/mean_length"} <= set(row)
        assert not [key for key in row if key.startswith("self_distillation/")]
    assert not list(tmp_path.glob("checkpoint-*")) and (tmp_path / "model.safetensors").exists()


# -- every teacher kind trains ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("teacher", ["frozen", "ema", "trust_region", "live", "lora_ema"])
def test_each_teacher_trains(tiny_model_dir, tmp_path, teacher):
    extra = {"ema": {"gradient_accumulation_steps": 2}, "lora_ema": {"use_peft": True, "lora_r": 4}}.get(teacher, {})
    trainer = build_sdpo_trainer(sdpo_config(tiny_model_dir, tmp_path, teacher=teacher, **extra))
    initial = load_model(tiny_model_dir).state_dict()
    trainer.train()

    assert trainer.state.global_step == 2
    rows = logged_steps(tmp_path)
    assert len(rows) == 2
    for row in rows:
        assert math.isfinite(row["loss"]) and math.isfinite(row["self_distillation/kl"])
        for key in (*DISTILLATION_METRICS, "reward", "reward_std", "completions/mean_length"):
            assert key in row, key
        assert 0.0 <= row["self_distillation/signal_fraction"] <= 1.0
        if teacher != "ema":  # one micro-batch per step, one process: the logged loss is the distillation loss
            assert row["loss"] == pytest.approx(row["self_distillation/loss"], rel=1e-4, abs=1e-9)

    step_callbacks = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, TeacherStepCallback)]
    assert len(step_callbacks) == 1 and step_callbacks[0].teacher is trainer.teacher
    assert step_callbacks[0].updates == 2  # once per optimizer step (ema: 4 micro-batches)

    if teacher == "live":
        assert isinstance(trainer.teacher, LiveTeacher)
    elif teacher == "lora_ema":
        model = trainer.model
        assert TEACHER_ADAPTER in model.peft_config
        named = dict(model.named_parameters())
        teacher_params = {n: p for n, p in named.items() if f".{TEACHER_ADAPTER}." in n}
        student_params = {n: p for n, p in named.items() if ".default." in n}
        assert teacher_params and len(teacher_params) == len(student_params)
        assert not any(p.requires_grad for p in teacher_params.values())
        assert all(p.requires_grad for p in student_params.values())
        base = sum(t.numel() for t in load_model(tiny_model_dir).parameters())
        adapter = sum(p.numel() for p in student_params.values())
        assert sum(p.numel() for p in model.parameters()) == base + 2 * adapter  # base weights shared, not copied
        pairs = [(p, named[n.replace(f".{TEACHER_ADAPTER}.", ".default.")]) for n, p in teacher_params.items()]
        lora_b = [(t, s) for (t, s), n in zip(pairs, teacher_params) if "lora_B" in n]
        assert any(s.abs().sum() > 0 for _, s in lora_b)  # the student adapter learned (lora_B starts at 0)
        assert any(t.abs().sum() > 0 for t, _ in lora_b)  # the teacher followed by EMA
        assert any(not torch.equal(t, s) for t, s in pairs)  # ... but lags behind
    else:
        teacher_state, student_state = trainer.teacher.model.state_dict(), trainer.model.state_dict()
        assert not any(p.requires_grad for p in trainer.teacher.model.parameters())
        moved = [k for k in initial if not torch.equal(student_state[k], initial[k])]
        assert moved  # the student trained
        if teacher == "ema":
            for k in moved:
                assert not torch.equal(teacher_state[k], initial[k]), k
                assert not torch.equal(teacher_state[k], student_state[k]), k
        else:  # frozen, and the frozen reference of trust_region
            for k in initial:
                assert torch.equal(teacher_state[k], initial[k]), k


# -- checkpoints and resume -------------------------------------------------------------------


@pytest.fixture
def ema_run(tiny_model_dir, tmp_path):
    """Two steps of SDPO with an EMA teacher and a checkpoint after each."""
    config = sdpo_config(tiny_model_dir, tmp_path / "run", teacher="ema", save_strategy="steps", save_steps=1, learning_rate=1e-2)
    run_sdpo(config)
    return config


@pytest.mark.slow
def test_checkpoints_hold_the_teacher_and_restore_it_exactly(ema_run, tiny_model_dir, tmp_path):
    out = Path(ema_run.output_dir)
    for step in (1, 2):
        checkpoint = out / f"checkpoint-{step}"
        assert (checkpoint / "sdpo_teacher.pt").is_file()
        assert json.loads((checkpoint / "sdpo_teacher.json").read_text()) == {"teacher": "ema", "step": step}
    saved = torch.load(out / "checkpoint-1" / "sdpo_teacher.pt")

    fresh = build_sdpo_trainer(ema_run)
    before = fresh.teacher.state_dict()
    assert set(before) == set(saved)
    assert any(not torch.equal(before[k], saved[k]) for k in saved)  # the saved teacher had moved
    fresh.restore_extra_state(out / "checkpoint-1")
    after = fresh.teacher.state_dict()
    for k in saved:
        assert torch.equal(after[k], saved[k]), k


@pytest.mark.slow
def test_resume_restores_the_teacher_and_continues(ema_run, monkeypatch):
    out = Path(ema_run.output_dir)
    restored = []
    original = SDPOTrainer.restore_extra_state
    monkeypatch.setattr(SDPOTrainer, "restore_extra_state", lambda self, checkpoint: (restored.append(checkpoint), original(self, checkpoint))[1])

    ema_run.resume, ema_run.max_steps = True, 3
    metrics = run_sdpo(ema_run)
    assert metrics["global_step"] == 3
    assert [Path(c).name for c in restored] == ["checkpoint-2"]
    assert json.loads((out / "checkpoint-3" / "sdpo_teacher.json").read_text()) == {"teacher": "ema", "step": 3}
    # the teacher of step 3 is one EMA step (rate 0.05) from the restored teacher of step 2, not from scratch
    teacher_2 = torch.load(out / "checkpoint-2" / "sdpo_teacher.pt")
    teacher_3 = torch.load(out / "checkpoint-3" / "sdpo_teacher.pt")
    student_3 = load_file(out / "checkpoint-3" / "model.safetensors")
    shared = [k for k in student_3 if k in teacher_3]
    assert shared
    for k in shared:
        torch.testing.assert_close(teacher_3[k], torch.lerp(teacher_2[k], student_3[k], 0.05), atol=1e-7, rtol=1e-5)


@pytest.mark.slow
def test_restoring_a_different_teacher_kind_is_refused(ema_run, tiny_model_dir, tmp_path):
    frozen = build_sdpo_trainer(sdpo_config(tiny_model_dir, tmp_path / "frozen", teacher="frozen"))
    checkpoint = Path(ema_run.output_dir) / "checkpoint-1"
    with pytest.raises(PosttrainError, match="was trained with teacher 'ema', not 'frozen'"):
        frozen.restore_extra_state(checkpoint)
    (tmp_path / "foreign").mkdir()
    with pytest.raises(PosttrainError, match="has no sdpo_teacher.json"):
        frozen.restore_extra_state(tmp_path / "foreign")


@pytest.mark.slow
def test_lora_ema_teacher_round_trips_through_a_checkpoint(tiny_model_dir, tmp_path):
    config = sdpo_config(tiny_model_dir, tmp_path / "run", teacher="lora_ema", use_peft=True, lora_r=4, max_steps=1,
                         save_strategy="steps", save_steps=1, learning_rate=1e-2)
    run_sdpo(config)
    checkpoint = tmp_path / "run" / "checkpoint-1"
    saved = torch.load(checkpoint / "sdpo_teacher.pt")
    fresh = build_sdpo_trainer(config)
    assert any(not torch.equal(fresh.teacher.state_dict()[k], saved[k]) for k in saved)
    fresh.restore_extra_state(checkpoint)
    for k, tensor in fresh.teacher.state_dict().items():
        assert torch.equal(tensor, saved[k]), k


# -- the command line --------------------------------------------------------------------------


def test_sdpo_help_lists_its_keys(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sdpo", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for key in ("grpo_weight", "teacher", "distillation_topk", "distillation_alpha", "reprompt_template", "num_generations"):
        assert f"--{key} " in out, key


def test_grpo_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["grpo", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: posttrain grpo" in out and "--grpo_weight (float, default 1.0)" in out


@pytest.mark.parametrize(
    "command, extra, message",
    [
        ("sdpo", ["--distillation_alpha", "2"], "config key 'distillation_alpha' must be <= 1.0, got 2.0"),
        ("sdpo", ["--teacher", "lora_ema"], "teacher 'lora_ema' keeps the teacher as a second LoRA adapter"),
        ("grpo", ["--temperature", "0"], "config key 'temperature' must be > 0, got 0.0"),
    ],
)
def test_cli_bad_value_is_one_line_and_exit_2(capsys, tiny_model_dir, tmp_path, command, extra, message):
    code = main([command, "--model_name_or_path", tiny_model_dir, "--output_dir", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"posttrain {command}: error: ")
    assert message in err
    assert not (tmp_path / "out").exists()


# -- vLLM sampling: TRL's keys, checked before the model loads ----------------------------------


def test_vllm_keys_reach_trls_config_with_trls_names(tiny_model_dir, tmp_path):
    from posttrain.trainers.vllm_sampling import VLLMArguments

    config = sdpo_config(tiny_model_dir, tmp_path, use_vllm=True, vllm_mode="server", vllm_server_host="10.0.0.2",
                         vllm_server_port=8123, vllm_tensor_parallel_size=2, vllm_gpu_memory_utilization=0.5,
                         vllm_importance_sampling_mode="token_truncate", vllm_importance_sampling_clip_max=2.0)
    trl = GRPOConfig(**config.trl_kwargs(GRPOConfig, **config.vllm_kwargs()))
    for key in [f.name for f in dataclasses.fields(VLLMArguments)]:
        assert getattr(trl, key) == getattr(config, key), key  # every key is TRL's own field
    assert (trl.use_vllm, trl.vllm_mode, trl.vllm_server_port, trl.vllm_importance_sampling_mode) == (True, "server", 8123, "token_truncate")
    assert sdpo_config(tiny_model_dir, tmp_path).vllm_kwargs() == {}  # off: TRL's defaults stand


@pytest.mark.parametrize("missing, message", [
    ("package", "use_vllm: true needs the vllm package (>=0.22,<=0.31.0, TRL's range)"),
    ("gpu", "use_vllm: true needs a CUDA GPU; this machine has none"),
])
def test_use_vllm_without_vllm_or_a_gpu_fails_before_the_model_loads(tiny_model_dir, tmp_path, no_model_loading, monkeypatch, missing, message):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (None if missing == "package" else object()) if name == "vllm" else find_spec(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_sdpo_trainer(sdpo_config(tiny_model_dir, tmp_path, use_vllm=True))


def test_an_ema_teacher_under_fsdp1_fails_before_the_model_loads_and_grpo_runs(tiny_model_dir, tmp_path, no_model_loading, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # FSDP1: accelerate's default version
    with pytest.raises(ConfigError, match="teacher 'ema' is a copy of the model, which posttrain shards under FSDP2 and ZeRO-3, not FSDP version 1"):
        build_sdpo_trainer(sdpo_config(tiny_model_dir, tmp_path, teacher="ema"))
    with pytest.raises(AssertionError, match="the model was loaded"):  # GRPO builds no teacher: it goes on to load
        build_sdpo_trainer(sdpo_config(tiny_model_dir, tmp_path, cls=GRPOJobConfig))


def test_vllm_in_trainer_args_is_refused_for_the_config_key(tiny_model_dir, tmp_path):
    config = sdpo_config(tiny_model_dir, tmp_path, trainer_args={"use_vllm": True})
    with pytest.raises(ConfigError, match="'use_vllm' is set from posttrain's config keys"):
        config.trl_kwargs(GRPOConfig)


# -- two processes: a group spread over both ---------------------------------------------------


@pytest.mark.slow
def test_two_processes_share_demonstrations_across_ranks(tiny_model_dir, tmp_path, free_port):
    """Groups of 8 over 2 processes × 4: the group's only success is rank 1's first sample; rank 0's
    samples must still get it as their demonstration (and the signal fraction is 7/8 globally)."""
    job = Path(__file__).with_name("sdpo_distributed_job.py")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port),
               str(job), tiny_model_dir, str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    ranks = [json.loads((tmp_path / f"generation-rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    texts = ranks[0]["completions"] + ranks[1]["completions"]  # the group in global order
    teachers = ranks[0]["teacher_prompts"] + ranks[1]["teacher_prompts"]
    mask = ranks[0]["mask"] + ranks[1]["mask"]
    assert len(texts) == 8 and len(set(texts)) > 1
    demonstration = texts[4]
    assert any(texts[i] != demonstration for i in range(4))  # rank 0 did not sample the same text
    for i in range(8):
        if i == 4:  # the success itself: no other success, no feedback
            assert mask[i] == 0.0 and "Correct solution" not in teachers[i]
        else:
            assert mask[i] == 1.0
            assert f"Correct solution:\n\n{demonstration}\n\n" in teachers[i], (i, teachers[i])

    for r in (0, 1):
        assert json.loads((tmp_path / f"done-rank{r}.json").read_text())["global_step"] == 2
    rows = logged_steps(tmp_path)
    assert len(rows) == 2
    for row in rows:
        assert math.isfinite(row["loss"])
        assert row["self_distillation/signal_fraction"] == pytest.approx(7 / 8)


def test_prompt_dataset_turns_strings_into_chat_and_drops_the_reference_completion():
    dataset = prompt_dataset([("f.jsonl:1", {"prompt": "What is 1 + 2?", "completion": "3", "answer": 3})])
    assert dataset[0]["prompt"] == [{"role": "user", "content": "What is 1 + 2?"}]
    assert "completion" not in dataset.column_names and dataset[0]["answer"] == 3


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("", r"f\.jsonl:4: field 'prompt' must be a non-empty list of messages"),
        (None, r"f\.jsonl:4: field 'prompt' must be a non-empty list of messages"),
        ([], r"f\.jsonl:4: field 'prompt' must be a non-empty list of messages"),
        ([{"role": "user"}], r"f\.jsonl:4: field 'prompt'\[0\] must be an object with string 'role' and 'content'"),
        ([{"role": "user", "content": 7}], r"f\.jsonl:4: field 'prompt'\[0\] must be an object with string 'role' and 'content'"),
    ],
)
def test_prompt_dataset_names_the_row_and_field_of_a_bad_prompt(prompt, message):
    with pytest.raises(DataError, match=message):
        prompt_dataset([("f.jsonl:4", {"prompt": prompt})])


def test_the_vocabulary_of_a_zero3_partitioned_head_is_its_real_shape(tiny_model_dir):
    """ZeRO-3 leaves an empty placeholder in the head and the real shape in ``ds_shape`` (set by
    hand here): read naively, the vocabulary is 0 and every distillation_topk is refused."""
    from posttrain.trainers.sdpo import vocabulary_size

    model = load_model(tiny_model_dir)
    assert vocabulary_size(model) == 598
    head = model.get_output_embeddings()
    head.weight = torch.nn.Parameter(torch.empty(0))
    head.weight.ds_shape = torch.Size([598, 128])
    assert vocabulary_size(model) == 598
