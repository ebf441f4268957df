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
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import torch
from transformers import TrainerCallback

TEACHER_ADAPTER = "sdpo_teacher"
TEACHER_KINDS = ("frozen", "ema", "trust_region", "lora_ema", "live")


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


class FrozenTeacher:
    """A frozen copy of the student's weights at the start (also the base of ``ema``)."""

    def __init__(self, student: torch.nn.Module):
        self.model = copy.deepcopy(student).eval()
        self.model.requires_grad_(False)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)


class EMATeacher(FrozenTeacher):
    """A frozen copy that follows the student by EMA."""

    def __init__(self, student: torch.nn.Module, rate: float = 0.05):
        super().__init__(student)
        self.rate = rate

    def update(self, student: torch.nn.Module) -> None:
        ema_update_(list(self.model.parameters()), list(student.parameters()), self.rate)


class LoraEMATeacher:
    """The teacher as a second LoRA adapter on the student's own (shared) base model."""

    def __init__(self, peft_model, rate: float = 0.05, student_adapter: str = "default"):
        if not hasattr(peft_model, "peft_config"):
            raise ValueError("teacher 'lora_ema' needs a PEFT (LoRA) student; use 'ema' for full-weight training")
        self.model, self.rate, self.student_adapter = peft_model, rate, student_adapter
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

    def update(self, student=None) -> None:
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


class TeacherEMACallback(TrainerCallback):
    """Apply the teacher's EMA after every optimizer step (``on_step_end`` fires once per
    optimizer step, after all gradient-accumulation micro-batches)."""

    def __init__(self, teacher, student: torch.nn.Module):
        self.teacher, self.student = teacher, student
        self.updates = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.teacher.update(self.student)
        self.updates += 1
