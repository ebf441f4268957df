"""SDPO teachers: the registry, which weights each kind runs, EMA math and timing, trust region,
LoRA-EMA on shared base weights."""

import typing

import pytest
import torch
from peft import LoraConfig, get_peft_model

from posttrain.errors import ConfigError
from posttrain.models import load_model
from posttrain.trainers.sdpo import SDPOSettings
from posttrain.trainers.teachers import (
    TEACHER_ADAPTER,
    TEACHERS,
    EMATeacher,
    FrozenTeacher,
    LiveTeacher,
    LoraEMATeacher,
    TeacherKind,
    TeacherStepCallback,
    TrustRegionTeacher,
    ema_update_,
    trust_region_logits,
)


def test_config_literal_names_exactly_the_registered_teachers():
    """SDPOSettings.teacher is checked by its Literal: it must offer the registry's names, no more, no fewer."""
    assert typing.get_args(TeacherKind) == tuple(TEACHERS)
    assert typing.get_type_hints(SDPOSettings)["teacher"] == TeacherKind


def test_only_the_teachers_that_move_are_checkpointed():
    assert {name for name, kind in TEACHERS.items() if kind.checkpointed} == {"ema", "lora_ema"}


ALL = slice(None)


def recording_forward(calls):
    """A stand-in for the trainer's forward: records the model it runs and returns its "logits"
    (the model's weight at the time of the forward), chunk by chunk (rows)."""
    def forward(model):
        calls.append(model)
        weight = model.weight.detach().clone()
        return lambda chunk: weight[chunk]
    return forward


@pytest.mark.parametrize("kind", ["frozen", "ema"])
def test_copy_teachers_run_their_copy_on_the_device(kind):
    student = torch.nn.Linear(2, 3)
    teacher = TEACHERS[kind](student, rate=0.1)
    calls = []
    with torch.no_grad():
        student.weight.add_(1.0)
    torch.testing.assert_close(teacher.logits(student, recording_forward(calls))(ALL), student.weight - 1.0)
    assert calls == [teacher.model] and teacher.model is not student
    assert not any(p.requires_grad for p in teacher.model.parameters()) and not teacher.model.training


def test_live_teacher_runs_the_student_and_holds_nothing():
    student, calls = torch.nn.Linear(2, 3), []
    teacher = LiveTeacher(student, rate=0.1)
    torch.testing.assert_close(teacher.logits(student, recording_forward(calls))(ALL), student.weight.detach())
    assert calls == [student] and teacher.state_dict() == {}
    teacher.after_optimizer_step(student)  # nothing to follow


def test_trust_region_teacher_interpolates_reference_and_student():
    student, calls = torch.nn.Linear(2, 3), []
    teacher = TrustRegionTeacher(student, rate=0.25)
    reference = student.weight.detach().clone()
    with torch.no_grad():
        student.weight.add_(4.0)
    logits = teacher.logits(student, recording_forward(calls))
    assert calls == [teacher.model, student]  # both forwards at once, the reference first; then chunks
    torch.testing.assert_close(logits(ALL), reference + 1.0)
    torch.testing.assert_close(logits(slice(1, 3)), reference[1:3] + 1.0)
    teacher.after_optimizer_step(student)
    torch.testing.assert_close(teacher.model.weight, reference)  # the reference stays frozen


def test_ema_update_by_hand():
    teacher, student = [torch.tensor([1.0, 2.0])], [torch.tensor([3.0, -2.0])]
    ema_update_(teacher, student, 0.05)
    torch.testing.assert_close(teacher[0], torch.tensor([0.95 * 1 + 0.05 * 3, 0.95 * 2 + 0.05 * -2]))
    ema_update_(teacher, student, 0.0)
    torch.testing.assert_close(teacher[0], torch.tensor([1.1, 1.8]))
    ema_update_(teacher, student, 1.0)
    torch.testing.assert_close(teacher[0], student[0])
    with pytest.raises(ValueError, match="EMA rate"):
        ema_update_(teacher, student, 1.5)


def test_trust_region_logits_interpolate_and_cut_the_gradient():
    reference, student = torch.tensor([0.0, 2.0]), torch.tensor([4.0, -2.0], requires_grad=True)
    torch.testing.assert_close(trust_region_logits(reference, student, 0.0), reference)
    torch.testing.assert_close(trust_region_logits(reference, student, 1.0), student.detach())
    mixed = trust_region_logits(reference, student, 0.25)
    torch.testing.assert_close(mixed, torch.tensor([1.0, 1.0]))
    assert not mixed.requires_grad


def test_frozen_and_ema_teachers(tiny_model_dir):
    student = load_model(tiny_model_dir)
    frozen, ema = FrozenTeacher(student), EMATeacher(student, rate=0.1)
    assert all(not p.requires_grad for p in ema.model.parameters())
    start = {n: p.detach().clone() for n, p in student.named_parameters()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    ema.after_optimizer_step(student)
    frozen.after_optimizer_step(student)
    for (name, teacher_param), frozen_param in zip(ema.model.named_parameters(), frozen.model.parameters()):
        torch.testing.assert_close(teacher_param, start[name] + 0.1)  # 0.9·θ0 + 0.1·(θ0 + 1)
        torch.testing.assert_close(frozen_param, start[name])
    state = ema.state_dict()
    other = EMATeacher(load_model(tiny_model_dir), rate=0.1)
    other.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(other.model.parameters(), ema.model.parameters()))


@pytest.mark.parametrize("kind", [FrozenTeacher, EMATeacher])
def test_copy_teacher_runs_its_own_weights_after_trl_patches_the_students_forward(tiny_model_dir, kind):
    """GRPOTrainer gives the student a forward that closes over the student's own; a deep copy
    kept it, so 'frozen' and 'ema' teachers ran the live student."""
    from trl.trainer.utils import add_fused_lm_head

    student = load_model(tiny_model_dir)
    add_fused_lm_head(student)
    ids = torch.tensor([[1, 2, 3, 4]])
    before = student(input_ids=ids).logits.detach().clone()
    teacher = kind(student)
    with torch.no_grad():
        for p in student.parameters():
            p.mul_(0.5)
    assert not torch.allclose(student(input_ids=ids).logits, before)
    torch.testing.assert_close(teacher.logits(student, lambda model: lambda chunk: model(input_ids=ids).logits[:, chunk])(ALL), before)


@pytest.mark.slow
def test_ema_runs_once_per_optimizer_step_with_gradient_accumulation(tiny_model_dir, tmp_path):
    from posttrain.commands.sft import SFTJobConfig, build_sft_trainer
    from posttrain.config import load_config

    config = load_config(SFTJobConfig, values=dict(model_name_or_path=tiny_model_dir, output_dir=str(tmp_path),
                                                    dataset_train_split="train[:48]", per_device_train_batch_size=4,
                                                    gradient_accumulation_steps=3, max_steps=4, save_strategy="no"))
    trainer = build_sft_trainer(config)
    snapshots = []

    class Snapshot(TeacherStepCallback):
        def on_step_end(self, args, state, control, **kwargs):
            snapshots.append([p.detach().clone() for p in self.student.parameters()])
            super().on_step_end(args, state, control, **kwargs)

    teacher = EMATeacher(trainer.model, rate=0.5)
    expected = [p.detach().clone() for p in trainer.model.parameters()]
    callback = Snapshot(teacher, trainer.model)
    trainer.add_callback(callback)
    trainer.train()
    assert callback.updates == 4 == trainer.state.global_step  # 12 micro-batches, 4 optimizer steps
    for student in snapshots:  # the EMA of the students seen after each optimizer step
        expected = [0.5 * e + 0.5 * s for e, s in zip(expected, student)]
    for e, t in zip(expected, teacher.model.parameters()):
        torch.testing.assert_close(t, e)


def test_lora_ema_teacher_shares_the_base_and_follows_by_ema(tiny_model_dir):
    base_params = sum(p.numel() for p in load_model(tiny_model_dir).parameters())
    model = get_peft_model(load_model(tiny_model_dir), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    trainable_before = [n for n, p in model.named_parameters() if p.requires_grad]
    adapter_params = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    teacher = LoraEMATeacher(model, rate=0.5)

    total = sum(p.numel() for p in model.parameters())
    assert total == base_params + 2 * adapter_params  # one more adapter; base weights not copied
    assert [n for n, p in model.named_parameters() if p.requires_grad] == trainable_before
    assert all(f".{TEACHER_ADAPTER}." in t_name for t_name in [n for n, p in model.named_parameters() if TEACHER_ADAPTER in n])

    ids = torch.tensor([[5, 6, 7, 8]])
    student_out = model(ids).logits
    with teacher.active():
        teacher_out = model(ids).logits
    torch.testing.assert_close(teacher_out, student_out)  # initialised from the student

    with torch.no_grad():
        for _, student in teacher.pairs:
            student.add_(0.2)
    with teacher.active():
        torch.testing.assert_close(model(ids).logits, teacher_out)  # the teacher did not move
    # its logits, chunk by chunk: the same (each chunk runs under the teacher's adapter too, as the head may carry one)
    torch.testing.assert_close(teacher.logits(model, lambda m: lambda chunk: m(ids).logits[:, chunk])(slice(1, 3)), teacher_out[:, 1:3])
    assert not torch.equal(model(ids).logits, teacher_out)  # ... and the student, after it, is itself again
    teacher.after_optimizer_step(model)
    for t, s in teacher.pairs:
        torch.testing.assert_close(t, s - 0.1)  # halfway to the student
    assert [n for n, p in model.named_parameters() if p.requires_grad] == trainable_before  # still only the student

    saved = teacher.state_dict()
    teacher.after_optimizer_step(model)
    teacher.load_state_dict(saved)
    for t, s in teacher.pairs:
        torch.testing.assert_close(t, s - 0.1)


def test_lora_ema_needs_a_peft_model(tiny_model_dir):
    with pytest.raises(ConfigError, match="needs a LoRA student"):
        LoraEMATeacher(load_model(tiny_model_dir))


# -- teachers where the student is sharded ----------------------------------------------------------

FSDP1 = {"ACCELERATE_USE_FSDP": "true"}  # accelerate's default fsdp_version is 1
FSDP2 = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}
ZERO3 = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}
ZERO2 = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}


@pytest.mark.parametrize("kind", list(TEACHERS))
def test_a_copy_teacher_is_refused_in_one_line_under_fsdp1_only(kind):
    from posttrain.trainers.teachers import check_teacher_fits

    if kind in ("lora_ema", "live"):  # a second adapter on the sharded base, or the student itself
        check_teacher_fits(kind, FSDP1)
        return
    with pytest.raises(ConfigError, match=f"teacher '{kind}' is a copy of the model, which posttrain shards under FSDP2 and ZeRO-3, not FSDP version 1"):
        check_teacher_fits(kind, FSDP1)
    for environ in (FSDP2, ZERO3, ZERO2, {}):  # sharded like the student (tests/robustness/test_distributed.py), or whole
        check_teacher_fits(kind, environ)


def test_the_ema_shards_pair_by_name_and_shape():
    """On sharded parameters the EMA runs on each process's local shards; pairing a teacher that
    does not mirror the student is an error, never a silent zip of mismatched tensors."""
    from posttrain.trainers.teachers import ema_update_

    with pytest.raises(ValueError, match=r"shape \(2,\) with a student tensor of shape \(3,\)"):
        ema_update_([torch.zeros(2)], [torch.zeros(3)], 0.5)
    student = torch.nn.Sequential(torch.nn.Linear(2, 2))
    teacher = EMATeacher(student, rate=0.5)
    with pytest.raises(ValueError, match="not the student's"):
        teacher.after_optimizer_step(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)))



def test_a_copy_teacher_of_a_lora_student_partitioned_by_zero3_is_refused_in_one_line():
    """ZeRO-3 marks a partitioned parameter with ``ds_id`` (set by hand here); a LoRA student's
    partitioned base cannot be rebuilt as a copy, so the copy teachers say to use lora_ema."""
    from posttrain.trainers.teachers import copy_of_student

    student = torch.nn.Linear(2, 2)
    student.weight.ds_id = 0
    student.peft_config = {"default": None}
    with pytest.raises(ConfigError, match="a copy teacher of a LoRA student cannot be built under ZeRO-3: use teacher: lora_ema"):
        copy_of_student(student, accelerator=None)


def test_lora_ema_follows_the_parameters_the_model_holds_now(tiny_model_dir):
    """FSDP2 replaces every parameter of the model with a sharded one when accelerate prepares the
    student, after the teacher is built (done by hand here): the EMA must pair the parameters the
    model holds then, not the ones it held when the teacher was built (which nothing trains)."""
    model = get_peft_model(load_model(tiny_model_dir), LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    teacher = LoraEMATeacher(model, rate=0.5)
    for module in model.modules():  # what fully_shard does: new Parameter objects, same names
        for name, param in list(module.named_parameters(recurse=False)):
            module.register_parameter(name, torch.nn.Parameter(param.detach().clone(), requires_grad=param.requires_grad))
    with torch.no_grad():
        for _, student in teacher.pairs:
            student.add_(0.2)
    teacher.after_optimizer_step(model)
    params = dict(model.named_parameters())
    for name, param in params.items():
        if f".{TEACHER_ADAPTER}." in name:
            torch.testing.assert_close(param, params[name.replace(f".{TEACHER_ADAPTER}.", ".default.")] - 0.1)
