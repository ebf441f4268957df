"""SDPO teachers: which weights score the reprompted context.

* ``frozen``: the initial weights, never updated.
* ``ema``: an exponential moving average of the student, ``θ' ← (1−r)·θ' + r·θ`` after every
  optimizer step (r = 0.05) — once per optimizer step, not per micro-batch, so gradient
  accumulation does not change the averaging horizon.
* ``trust_region``: teacher logits interpolate between a frozen reference and the live student,
  ``lerp(ref_logits, student_logits, r)``.
* ``lora_ema``: for PEFT students, a second adapter ``sdpo_teacher`` initialised from the
  student's adapter, frozen, and EMA-updated on adapter weights only; the teacher forward
  switches adapters, so the (large) base weights are shared, never copied.
* ``live``: the current student itself (unregularised; known to diverge).

Each kind is one :class:`Teacher` subclass, named in :data:`TEACHERS` (the registry the
``teacher`` config key is checked against), so that the trainer holds one teacher object and asks
it, without knowing its kind, for its logits, to follow the student after an optimizer step, and
for the state a checkpoint keeps. What a kind costs in memory (a model copy, an adapter, nothing)
is decided once, when it is built.

The copies (``frozen``, ``ema``, ``trust_region``) are placed as accelerate places the student:
whole on every process under one process, DDP and ZeRO-1/2; under FSDP2 sharded by accelerate's
own FSDP2 preparation (the same wrap policy, mesh and mixed precision), so each process holds
1/N of the copy and its EMA runs shard by shard on the process's local shards, which FSDP2 lays
out the same way for both models; under ZeRO-3 built partitioned and run by a DeepSpeed engine,
its EMA on gathered pairs (:func:`copy_of_student`, :func:`place_like_student`). FSDP1 (flat
parameters) is refused before the model loads (:func:`check_teacher_fits`).
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Mapping
from typing import Callable, ClassVar, Iterator, Literal

import torch
from accelerate import Accelerator
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor, distribute_tensor
from transformers import TrainerCallback

from posttrain.errors import ConfigError
from posttrain.runtime import is_main_process, sharding_engine

TEACHER_ADAPTER = "sdpo_teacher"

ChunkLogits = Callable[[slice], torch.Tensor]
"""The teacher's logits ``(1, c, V)`` at a chunk of the batch's distilled tokens: the distillation
asks for one chunk at a time, so the teacher's ``(B, T, V)`` logits never exist at once."""

Forward = Callable[[torch.nn.Module], ChunkLogits]
"""Runs a model on the reprompted batch and returns its logits, chunk by chunk (the trainer's part)."""


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """The part of ``tensor`` this process holds: its shard of an FSDP2 parameter, else itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


@torch.no_grad()
def ema_update_(teacher: list[torch.Tensor], student: list[torch.Tensor], rate: float) -> None:
    """In place: ``teacher ← (1 − rate)·teacher + rate·student``, tensor by tensor; on FSDP2
    tensors shard by shard, each process on the shards it holds; on ZeRO-3 parameters on the
    gathered pair, one pair at a time (a ZeRO-3 parameter's data is a placeholder, or for a small
    "persistent" one a whole copy kept apart from its partition, so only DeepSpeed's gather and
    re-partition update it correctly)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"EMA rate must be in [0, 1], got {rate}")
    for t, s in zip(teacher, student, strict=True):
        if hasattr(t, "ds_id"):
            import deepspeed

            with deepspeed.zero.GatheredParameters([t, s], modifier_rank=0):  # rank 0's result is partitioned on exit
                t.data.lerp_(s.data.to(t.dtype), rate)
            continue
        t, s = _local(t), _local(s).detach()
        if t.shape != s.shape:
            raise ValueError(f"EMA pairs a teacher tensor of shape {tuple(t.shape)} with a student tensor of shape {tuple(s.shape)}")
        t.lerp_(s.to(t.dtype), rate)


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of the whole of a possibly sharded parameter (every process must call it)."""
    if isinstance(tensor, DTensor):
        return tensor.full_tensor().detach().clone()
    if hasattr(tensor, "ds_id"):
        import deepspeed

        with deepspeed.zero.GatheredParameters([tensor]):
            return tensor.detach().clone()
    return tensor.detach().clone()


@torch.no_grad()
def _load_whole_(tensor: torch.Tensor, whole: torch.Tensor) -> None:
    """Set a possibly sharded parameter from its whole value (every process, each with the same
    ``whole``): each process keeps its shard."""
    whole = whole.to(tensor.device, tensor.dtype)
    if isinstance(tensor, DTensor):
        tensor.copy_(distribute_tensor(whole, tensor.device_mesh, tensor.placements))
    elif hasattr(tensor, "ds_id"):
        import deepspeed

        with deepspeed.zero.GatheredParameters([tensor], modifier_rank=0):  # rank 0's value is partitioned on exit
            tensor.copy_(whole)
    else:
        tensor.copy_(whole)


def is_zero3(model: torch.nn.Module) -> bool:
    """Whether DeepSpeed ZeRO-3 partitions the model's parameters."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def copy_of_student(student: torch.nn.Module, accelerator: Accelerator | None) -> torch.nn.Module:
    """A frozen copy of the student's weights, before accelerate prepares either.

    A student that ZeRO-3 partitioned as it loaded (``zero3_init_flag``) holds placeholders, which a
    deep copy would copy: the copy is then built partitioned (``deepspeed.zero.Init``) from the
    student's config and filled parameter by parameter from the gathered student, so no process
    ever holds more than one whole parameter of it. A LoRA student's base cannot be rebuilt so."""
    if is_zero3(student):
        if hasattr(student, "peft_config"):
            raise ConfigError("a copy teacher of a LoRA student cannot be built under ZeRO-3: use teacher: lora_ema")
        import deepspeed

        with deepspeed.zero.Init(config_dict_or_path=accelerator.state.deepspeed_plugin.deepspeed_config):
            model = type(student)._from_config(student.config, dtype=next(student.parameters()).dtype)
        teacher_params = dict(model.named_parameters())
        for name, param in student.named_parameters():
            with deepspeed.zero.GatheredParameters([teacher_params[name], param], modifier_rank=0):
                teacher_params[name].data.copy_(param.data)
    else:
        model = copy.deepcopy(student)
        # TRL's GRPOTrainer patches the student's forward with a closure over the student's own
        # bound forward (trl.trainer.utils.add_fused_lm_head); a deep copy keeps that closure, so
        # the copy would run the student's weights. The copy runs its class's forward instead.
        model.__dict__.pop("forward", None)
    return model.eval().requires_grad_(False)


def place_like_student(copy: torch.nn.Module, accelerator: Accelerator | None) -> torch.nn.Module:
    """Put a teacher's copy of the student where accelerate will put the student, and return what
    runs its forward:
    - under FSDP2, the copy sharded by accelerate's FSDP2 preparation (which, with
      ``cpu_ram_efficient_loading``, also sends rank 0's weights to the processes whose copy holds none);
    - under ZeRO-3, a DeepSpeed inference engine around the partitioned copy (TRL's preparation
      of its reference models);
    - else the copy on the process's device (``None``: where it is)."""
    if accelerator is None:
        return copy
    if accelerator.is_fsdp2:
        from accelerate.utils.fsdp_utils import fsdp2_prepare_model

        return fsdp2_prepare_model(accelerator, copy)
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None and plugin.zero_stage == 3:
        from trl.models.utils import prepare_deepspeed

        return prepare_deepspeed(copy, accelerator)
    return copy.to(accelerator.device)


def is_sharded(model: torch.nn.Module) -> bool:
    return any(isinstance(m, FSDPModule) for m in model.modules())


def reshard_(model: torch.nn.Module) -> None:
    """Back to the process's shards: FSDP2 leaves a unit that does not reshard after its forward
    (accelerate's tail, the final norm and the head) gathered until a backward the teacher never
    runs, and the gathered unit's parameters are then whole tensors, not the shards."""
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def trust_region_logits(reference_logits: torch.Tensor, student_logits: torch.Tensor, rate: float) -> torch.Tensor:
    """Teacher logits ``(1 − rate)·reference + rate·student`` (the student's gradient is cut)."""
    return torch.lerp(reference_logits, student_logits.detach(), rate)


class Teacher:
    """What the SDPO trainer asks of a teacher; every kind is built as ``kind(student, rate, accelerator)``
    (``accelerator``: the trainer's, which says where a copy goes; None keeps it on the student's device).

    The defaults are those of a teacher that holds nothing of its own: nothing to do after an
    optimizer step, nothing to save.
    """

    checkpointed: ClassVar[bool] = False
    """Whether checkpoints hold this teacher's state: true for the kinds that move during training;
    the others are rebuilt, the same, from the initial model on resume."""

    def __init__(self, student: torch.nn.Module, rate: float = 0.05, accelerator: Accelerator | None = None):
        self.rate = rate

    def logits(self, student: torch.nn.Module, forward: Forward) -> ChunkLogits:
        """The teacher's completion logits, chunk by chunk. The trainer's ``forward`` knows the batch
        layout, autocast and temperature; the teacher only chooses the weights it is run with."""
        raise NotImplementedError

    def after_optimizer_step(self, student: torch.nn.Module) -> None:
        """Called once per optimizer step, after the student's update (not per micro-batch)."""

    def state_dict(self) -> dict:
        """The state a checkpoint keeps, whole (called on every process, since a sharded teacher's
        state is gathered from all of them; the main process writes it)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Load a whole state from :meth:`state_dict` (on every process; each keeps its shard)."""


class LiveTeacher(Teacher):
    """The current student itself."""

    def logits(self, student: torch.nn.Module, forward: Forward) -> ChunkLogits:
        return forward(student)


class FrozenTeacher(Teacher):
    """A frozen copy of the student's weights at the start (also the base of ``ema`` and the
    reference of ``trust_region``), placed like the student (:func:`place_like_student`).

    The copy is taken before accelerate prepares the student, so it is the plain model the
    command loaded (under FSDP2 with ``cpu_ram_efficient_loading``, whole on rank 0 only)."""

    def __init__(self, student: torch.nn.Module, rate: float = 0.05, accelerator: Accelerator | None = None):
        super().__init__(student, rate, accelerator)
        self.model = copy_of_student(student, accelerator)  # the teacher's weights
        self.runner = place_like_student(self.model, accelerator)  # what runs them (a DeepSpeed engine under ZeRO-3)

    def logits(self, student: torch.nn.Module, forward: Forward) -> ChunkLogits:
        return forward(self.runner)

    def state_dict(self) -> dict:
        """The whole state; every process takes part in gathering a sharded one, which lands on
        rank 0's CPU (ZeRO-3: one parameter at a time)."""
        if is_zero3(self.model):  # every process gathers each parameter; only rank 0 keeps a copy
            whole = {}
            for name, tensor in self.model.state_dict(keep_vars=True).items():
                gathered = _whole(tensor)
                if is_main_process():
                    whole[name] = gathered.cpu()
            return whole
        if not is_sharded(self.model):
            return self.model.state_dict()
        reshard_(self.model)
        return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_state_dict(self, state: dict) -> None:
        if is_zero3(self.model):  # each process keeps its partition
            for name, tensor in self.model.state_dict(keep_vars=True).items():
                _load_whole_(tensor, state[name])
        elif is_sharded(self.model):
            set_model_state_dict(self.model, state, options=StateDictOptions(full_state_dict=True))  # each process keeps its shard
        else:
            self.model.load_state_dict(state)


class EMATeacher(FrozenTeacher):
    """A frozen copy that follows the student by EMA."""

    checkpointed = True

    def after_optimizer_step(self, student: torch.nn.Module) -> None:
        """Pairs parameters by name, so a teacher that does not mirror the student fails loudly."""
        reshard_(self.model)
        teacher, student = dict(self.model.named_parameters()), dict(student.named_parameters())
        if teacher.keys() != student.keys():
            raise ValueError(f"the EMA teacher's parameters are not the student's: {sorted(teacher.keys() ^ student.keys())[:3]}")
        ema_update_([teacher[name] for name in student], list(student.values()), self.rate)


class TrustRegionTeacher(FrozenTeacher):
    """Logits between the frozen reference's and the live student's (one more forward, no more weights)."""

    def logits(self, student: torch.nn.Module, forward: Forward) -> ChunkLogits:
        reference, current = forward(self.runner), forward(student)
        return lambda chunk: trust_region_logits(reference(chunk), current(chunk), self.rate)


class LoraEMATeacher(Teacher):
    """The teacher as a second LoRA adapter on the student's own (shared) base model."""

    checkpointed = True

    def __init__(self, peft_model, rate: float = 0.05, accelerator: Accelerator | None = None, student_adapter: str = "default"):
        if not hasattr(peft_model, "peft_config"):
            raise ConfigError("teacher 'lora_ema' needs a LoRA student (use_peft: true); use teacher 'ema' otherwise")
        super().__init__(peft_model, rate, accelerator)
        self.model, self.student_adapter = peft_model, student_adapter
        config = copy.deepcopy(peft_model.peft_config[student_adapter])
        config.inference_mode = True
        peft_model.add_adapter(TEACHER_ADAPTER, config)
        peft_model.set_adapter(student_adapter)  # add_adapter may switch; training stays on the student
        with torch.no_grad():
            for teacher, student in self.pairs:
                teacher.copy_(student)
                teacher.requires_grad_(False)

    @property
    def pairs(self) -> list[tuple[torch.nn.Parameter, torch.nn.Parameter]]:
        """(teacher, student) adapter parameters, looked up on every use: FSDP2 replaces the
        model's parameters with sharded ones when accelerate prepares the student, after this
        teacher is built, so references kept from then would point at tensors no longer trained."""
        params = dict(self.model.named_parameters())
        pairs = []
        for name, teacher in params.items():
            if f".{TEACHER_ADAPTER}." in name:
                student_name = name.replace(f".{TEACHER_ADAPTER}.", f".{self.student_adapter}.")
                pairs.append((teacher, params[student_name]))
        if not pairs:
            raise ValueError(f"found no parameters of the '{TEACHER_ADAPTER}' adapter")
        return pairs

    def logits(self, student: torch.nn.Module, forward: Forward) -> ChunkLogits:
        with self.active():
            logits = forward(student)

        def teacher_chunk(chunk: slice) -> torch.Tensor:  # the head too may carry the adapter
            with self.active():
                return logits(chunk)

        return teacher_chunk

    def after_optimizer_step(self, student: torch.nn.Module) -> None:
        """EMA toward the student's adapter, which ``pairs`` holds (the base weights are shared)."""
        ema_update_([t for t, _ in self.pairs], [s for _, s in self.pairs], self.rate)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Run the model as the teacher inside this block."""
        self.model.set_adapter(TEACHER_ADAPTER)
        try:
            yield
        finally:
            self.model.set_adapter(self.student_adapter)
            for teacher, _ in self.pairs:  # set_adapter marks the active adapter trainable
                teacher.requires_grad_(False)

    def state_dict(self) -> dict:
        return {f"{i}": _whole(t) for i, (t, _) in enumerate(self.pairs)}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for i, (teacher, _) in enumerate(self.pairs):
                _load_whole_(teacher, state[f"{i}"])


TEACHERS: dict[str, type[Teacher]] = {
    "frozen": FrozenTeacher,
    "ema": EMATeacher,
    "trust_region": TrustRegionTeacher,
    "lora_ema": LoraEMATeacher,
    "live": LiveTeacher,
}


def check_teacher_fits(kind: str, environ: Mapping[str, str] = os.environ) -> None:
    """Before the model loads: the copy teachers are sharded under FSDP2 and ZeRO-3, and whole
    under DDP and ZeRO-1/2. Under FSDP1 the student's parameters become flat shards the copy's
    cannot be paired with: say so instead of training against a wrong teacher."""
    if sharding_engine(environ) == "FSDP" and environ.get("FSDP_VERSION", "1") != "2" and issubclass(TEACHERS[kind], FrozenTeacher):
        raise ConfigError(
            f"teacher '{kind}' is a copy of the model, which posttrain shards under FSDP2 and ZeRO-3, not FSDP version 1: "
            "launch with fsdp_version: 2 (recipes/accelerate/fsdp.yaml), or train a LoRA student with "
            "teacher: lora_ema (its teacher is a second adapter on the sharded base)"
        )


# The names again, for the config field: the config loader checks a Literal field's value, and a
# type checker cannot read a dict's keys (tests/trainers/test_teachers.py keeps the two equal).
TeacherKind = Literal["frozen", "ema", "trust_region", "lora_ema", "live"]


class TeacherStepCallback(TrainerCallback):
    """Tell the teacher after every optimizer step (``on_step_end`` fires once per optimizer step,
    after all gradient-accumulation micro-batches), so an EMA teacher follows the student."""

    def __init__(self, teacher: Teacher, student: torch.nn.Module):
        self.teacher, self.student = teacher, student
        self.updates = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.teacher.after_optimizer_step(self.student)
        self.updates += 1
