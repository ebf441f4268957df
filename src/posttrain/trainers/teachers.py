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
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Mapping
from typing import Callable, ClassVar, Iterator, Literal

import torch
from transformers import TrainerCallback

from posttrain.errors import ConfigError
from posttrain.runtime import sharding_engine

TEACHER_ADAPTER = "sdpo_teacher"

ChunkLogits = Callable[[slice], torch.Tensor]
"""The teacher's logits ``(1, c, V)`` at a chunk of the batch's distilled tokens: the distillation
asks for one chunk at a time, so the teacher's ``(B, T, V)`` logits never exist at once."""

Forward = Callable[[torch.nn.Module], ChunkLogits]
"""Runs a model on the reprompted batch and returns its logits, chunk by chunk (the trainer's part)."""


@torch.no_grad()
def ema_update_(teacher: list[torch.Tensor], student: list[torch.Tensor], rate: float) -> None:
    """In place: ``teacher ← (1 − rate)·teacher + rate·student``, tensor by tensor."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"EMA rate must be in [0, 1], got {rate}")
    for t, s in zip(teacher, student, strict=True):
        t.lerp_(s.detach().to(t.dtype), rate)


def trust_region_logits(reference_logits: torch.Tensor, student_logits: torch.Tensor, rate: float) -> torch.Tensor:
    """Teacher logits ``(1 − rate)·reference + rate·student`` (the student's gradient is cut)."""
    return torch.lerp(reference_logits, student_logits.detach(), rate)


class Teacher:
    """What the SDPO trainer asks of a teacher; every kind is built as ``kind(student, rate, device)``.

    The defaults are those of a teacher that holds nothing of its own: nothing to do after an
    optimizer step, nothing to save.
    """

    checkpointed: ClassVar[bool] = False
    """Whether checkpoints hold this teacher's state: true for the kinds that move during training;
    the others are rebuilt, the same, from the initial model on resume."""

    def __init__(self, student: torch.nn.Module, rate: float = 0.05, device: torch.device | str | None = None):
        self.rate = rate

    def logits(self, student: torch.nn.Module, forward: Forward) -> ChunkLogits:
        """The teacher's completion logits, chunk by chunk. The trainer's ``forward`` knows the batch
        layout, autocast and temperature; the teacher only chooses the weights it is run with."""
        raise NotImplementedError

    def after_optimizer_step(self, student: torch.nn.Module) -> None:
        """Called once per optimizer step, after the student's update (not per micro-batch)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class LiveTeacher(Teacher):
    """The current student itself."""

    def logits(self, student: torch.nn.Module, forward: Forward) -> ChunkLogits:
        return forward(student)


class FrozenTeacher(Teacher):
    """A frozen copy of the student's weights at the start (also the base of ``ema`` and the
    reference of ``trust_region``), on ``device``."""

    def __init__(self, student: torch.nn.Module, rate: float = 0.05, device: torch.device | str | None = None):
        super().__init__(student, rate, device)
        self.model = copy.deepcopy(student).eval()
        # TRL's GRPOTrainer patches the student's forward with a closure over the student's own
        # bound forward (trl.trainer.utils.add_fused_lm_head); a deep copy keeps that closure, so
        # the copy would run the student's weights. The copy runs its class's forward instead.
        self.model.__dict__.pop("forward", None)
        self.model.requires_grad_(False)
        self.model.to(device)

    def logits(self, student: torch.nn.Module, forward: Forward) -> ChunkLogits:
        return forward(self.model)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)


class EMATeacher(FrozenTeacher):
    """A frozen copy that follows the student by EMA."""

    checkpointed = True

    def after_optimizer_step(self, student: torch.nn.Module) -> None:
        ema_update_(list(self.model.parameters()), list(student.parameters()), self.rate)


class TrustRegionTeacher(FrozenTeacher):
    """Logits between the frozen reference's and the live student's (one more forward, no more weights)."""

    def logits(self, student: torch.nn.Module, forward: Forward) -> ChunkLogits:
        reference, current = forward(self.model), forward(student)
        return lambda chunk: trust_region_logits(reference(chunk), current(chunk), self.rate)


class LoraEMATeacher(Teacher):
    """The teacher as a second LoRA adapter on the student's own (shared) base model."""

    checkpointed = True

    def __init__(self, peft_model, rate: float = 0.05, device: torch.device | str | None = None, student_adapter: str = "default"):
        if not hasattr(peft_model, "peft_config"):
            raise ConfigError("teacher 'lora_ema' needs a LoRA student (use_peft: true); use teacher 'ema' otherwise")
        super().__init__(peft_model, rate, device)
        self.model, self.student_adapter = peft_model, student_adapter
        config = copy.deepcopy(peft_model.peft_config[student_adapter])
        config.inference_mode = True
        peft_model.add_adapter(TEACHER_ADAPTER, config)
        peft_model.set_adapter(student_adapter)  # add_adapter may switch; training stays on the student
        self.pairs = self._adapter_pairs()
        with torch.no_grad():
            for teacher, student in self.pairs:
                teacher.copy_(student)
                teacher.requires_grad_(False)

    def _adapter_pairs(self) -> list[tuple[torch.nn.Parameter, torch.nn.Parameter]]:
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
        return {f"{i}": t.detach().clone() for i, (t, _) in enumerate(self.pairs)}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for i, (teacher, _) in enumerate(self.pairs):
                teacher.copy_(state[f"{i}"])


TEACHERS: dict[str, type[Teacher]] = {
    "frozen": FrozenTeacher,
    "ema": EMATeacher,
    "trust_region": TrustRegionTeacher,
    "lora_ema": LoraEMATeacher,
    "live": LiveTeacher,
}


def check_teacher_fits(kind: str, environ: Mapping[str, str] = os.environ) -> None:
    """Before the model loads: a teacher that copies the student cannot work where the student's
    weights are sharded (each process would copy its shard or placeholders, and the EMA would pair
    mismatched tensors), so say so instead of training against a wrong teacher."""
    engine = sharding_engine(environ)
    if engine and issubclass(TEACHERS[kind], FrozenTeacher):
        raise ConfigError(
            f"teacher '{kind}' is a whole copy of the model on every process, which {engine} does not shard: "
            "train a LoRA student with teacher: lora_ema (its teacher is a second adapter on the sharded base), "
            "or launch with DDP or ZeRO-2"
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
