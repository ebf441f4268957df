"""Self-distillation RL on TRL's GRPOTrainer: :class:`SDPOTrainer` and its :class:`SDPOSettings`
(what ``posttrain sdpo`` and ``posttrain grpo`` train with).

SDPO (Hübotter et al. 2026, https://arxiv.org/abs/2601.20802): sample G completions per prompt,
score them; the same model, shown a successful sibling answer and/or the environment's feedback
(:mod:`posttrain.data.reprompting`), is the teacher, and the student is trained to match the
teacher's next-token distribution on its own samples (:func:`posttrain.losses.self_distillation_loss`).

TRL's GRPOTrainer does the sampling, reward calls, group advantages, batching and the GRPO loss.
posttrain adds, per generation batch:

1. ``_calculate_rewards``: keep the rewards, completions and each sample's feedback;
2. ``_generate_and_score_completions``: build every sample's teacher prompt (groups may span
   processes, so completions and feedback are gathered first) and store it, left-padded, in the
   batch, where TRL's shuffling and splitting keep it aligned with its sample;

and per micro-batch, ``_compute_loss``: one student forward over the completion, one teacher
forward over teacher prompt + the same completion tokens, each keeping only the hidden states its
LM head was given (:class:`posttrain.models.output_head.OutputHead`); then, a chunk of the
distilled tokens at a time, the student's top-k log-probs and the teacher's at those tokens
(:func:`posttrain.losses.distillation_inputs_in_chunks`), so no ``(B, T, V)`` tensor exists; the
distillation loss, the token mean of the whole batch over all processes, mixed with TRL's GRPO
loss as ``λ·L_GRPO + (1−λ)·L_SDPO`` (``grpo_weight`` λ), or, with ``grpo_mixing: advantage``, the
paper's mix of the two advantages in one policy gradient
(:func:`posttrain.losses.mixed_advantage_loss`). With λ = 1 nothing of SDPO runs: it is TRL's
GRPO, which is what ``posttrain grpo`` trains.

Teachers (:mod:`posttrain.trainers.teachers`): ``frozen``, ``ema`` (after each optimizer step),
``trust_region``, ``lora_ema`` (second adapter, base weights shared) and ``live``, one class each;
the trainer builds the configured one and only calls its methods. The state of those that move is
written into every checkpoint and restored on resume.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from accelerate.utils import gather_object
from trl import GRPOTrainer
from trl.trainer.utils import pad

from posttrain.artifacts import atomic_open, write_json
from posttrain.config import config_field
from posttrain.data.chat import message_text
from posttrain.data.reprompting import RepromptSettings, TeacherInput, build_teacher_inputs, first_divergence, token_at_character
from posttrain.errors import ConfigError, PosttrainError
from posttrain.losses import distillation_inputs_in_chunks, mixed_advantage_loss, self_distillation_loss, sequence_mean_weights
from posttrain.models.output_head import OutputHead
from posttrain.runtime import get_logger
from posttrain.tasks import Feedback
from posttrain.trainers.checkpoints import CompleteCheckpoints
from posttrain.trainers.nonfinite import NonFiniteLossGuard
from posttrain.trainers.rewards import FeedbackReward, feedback_reward
from posttrain.trainers.teachers import TEACHERS, ChunkLogits, Teacher, TeacherKind, TeacherStepCallback

log = get_logger(__name__)

TEACHER_STATE_FILE = "sdpo_teacher.pt"
TEACHER_INFO_FILE = "sdpo_teacher.json"


@dataclass
class SDPOSettings(RepromptSettings):
    """The SDPO-specific options (names as in the reference code, lasgroup/SDPO, where it has them)."""

    grpo_weight: float = config_field(0.0, help="λ, GRPO's share (grpo_mixing says where it mixes): 0 pure SDPO, 1 plain GRPO.", ge=0.0, le=1.0)
    grpo_mixing: Literal["loss", "advantage"] = config_field(
        "loss",
        help="Where λ mixes GRPO into SDPO: loss, λ·L_GRPO + (1−λ)·L_SDPO with TRL's GRPO loss; advantage, the paper's "
        "one policy gradient with per-token advantage λ·(r − group mean) + (1−λ)·(log π_teacher − log π_student) of "
        "the sampled token (needs sampled-token mode, distillation_topk: 0).",
    )
    teacher: TeacherKind = config_field(
        "ema", help="Teacher weights: frozen, ema, trust_region, lora_ema (LoRA students), live."
    )
    teacher_update_rate: float = config_field(
        0.05, help="ema/lora_ema: EMA rate r per optimizer step; trust_region: interpolation r toward the student.", ge=0.0, le=1.0
    )
    distillation_alpha: float = config_field(0.5, help="Divergence: 0 forward KL, 1 reverse KL, between: α-skewed JSD.", ge=0.0, le=1.0)
    distillation_topk: int = config_field(100, help="Top-k tokens of the student the divergence is computed on (0: sampled-token mode).", ge=0)
    distillation_add_tail: bool = config_field(True, help="Top-k: add the rest-of-vocabulary bucket (else renormalise over k).")
    distillation_is_clip: float | None = config_field(2.0, help="Clip of the importance weight for stale samples (None: no importance correction, as in the reference).", gt=0)
    distillation_chunk_size: int = config_field(
        1024,
        help="Distilled tokens projected to the vocabulary at once: memory holds a few chunk × vocabulary floats, "
        "never the batch's whole (batch × length × vocabulary) logits.",
        ge=1,
    )
    distillation_aggregation: Literal["token_mean", "sequence_mean"] = config_field(
        "token_mean",
        help="How the distilled tokens' losses make the step's loss: token_mean, one mean over every distilled token "
        "of the batch (each token weighs the same); sequence_mean, the reference's (lasgroup/SDPO): a token mean per "
        "sample, averaged over all samples, those without a teacher signal counting 0.",
    )
    distillation_span: Literal["all", "to_divergence"] = config_field(
        "all",
        help="Tokens distilled on a failed sample: all (reference) or up to and including its first mistake: the first "
        "token where it leaves its demonstration (on a deterministic task), or, with feedback only, the token where "
        "the verifier's feedback locates the first error (a task returning posttrain.tasks.Feedback; else all).",
    )

    def __post_init__(self):  # ranges and names: the config loader checks the fields' bounds and Literals
        if self.distillation_topk == 0 and self.distillation_alpha != 1.0:
            raise ConfigError(
                "sampled-token mode (distillation_topk: 0) estimates the reverse KL only: set distillation_alpha: 1.0"
            )
        if self.grpo_mixing == "advantage" and self.distillation_topk != 0:
            raise ConfigError(
                "grpo_mixing: advantage mixes SDPO's sampled-token advantage (log π_teacher − log π_student): "
                "set distillation_topk: 0 and distillation_alpha: 1.0"
            )
        if self.grpo_mixing == "advantage" and self.distillation_aggregation != "token_mean":
            raise ConfigError("grpo_mixing: advantage averages over every response token: set distillation_aggregation: token_mean")


def vocabulary_size(model) -> int:
    """The rows of the model's output head; ZeRO-3 partitions weights as they load, leaving a
    placeholder whose own shape is empty and the real one in ``ds_shape``."""
    head = model.get_output_embeddings().weight
    return getattr(head, "ds_shape", head.shape)[0]


class SDPOTrainer(NonFiniteLossGuard, CompleteCheckpoints, GRPOTrainer):
    """TRL's GRPOTrainer with SDPO's self-distillation loss.

    Reward functions may return floats or ``(reward, feedback)`` per completion.
    """

    def __init__(self, *args, reward_funcs, sdpo: SDPOSettings, **kwargs):
        reward_funcs = reward_funcs if isinstance(reward_funcs, list) else [reward_funcs]
        reward_funcs = [f if isinstance(f, (str, torch.nn.Module, FeedbackReward)) else feedback_reward(f) for f in reward_funcs]
        super().__init__(*args, reward_funcs=reward_funcs, **kwargs)
        self.sdpo = sdpo
        self.distills = sdpo.grpo_weight < 1.0
        self.mixes_advantages = self.distills and sdpo.grpo_mixing == "advantage" and sdpo.grpo_weight > 0.0
        self._scored: tuple[list, list] | None = None  # this process's prompts and completions
        self._rewards: torch.Tensor | None = None  # (N_all,) weighted rewards of the whole generation batch
        self.teacher = self._make_teacher() if self.distills else None
        self._head_outside_forward: bool | None = None  # whether OutputHead reproduces the model's logits (first forward tells)

    # -- teacher --------------------------------------------------------------------------------

    def _make_teacher(self) -> Teacher:
        """The configured teacher, told after every optimizer step."""
        vocab = vocabulary_size(self.model)
        if self.sdpo.distillation_topk > vocab:
            raise ConfigError(f"config key 'distillation_topk' ({self.sdpo.distillation_topk}) exceeds the vocabulary ({vocab})")
        kind = TEACHERS[self.sdpo.teacher]
        teacher = kind(self.model, rate=self.sdpo.teacher_update_rate, accelerator=self.accelerator)
        self.add_callback(TeacherStepCallback(teacher, self.model))
        return teacher

    def _completion_states(self, model, prefix: str, inputs: dict, selected: torch.Tensor, router_loss: list | None = None):
        """One forward over the left-padded ``{prefix}_ids`` (the student's or the teacher's prompt)
        and the batch's completion tokens; returns ``(states, logits)``: ``states`` ``(1, N, ·)`` at the
        N ``selected`` completion tokens (``(B, n)`` boolean) and ``logits(chunk)``, their
        temperature-scaled logits ``(1, c, V)`` in float32.

        The states are the hidden states the model's head was given (captured by
        :class:`OutputHead`, the head projecting only the last position in the forward), so the
        batch's ``(B, n, V)`` logits never exist; for a model whose head is not reproduced outside
        its forward (checked on the first call) they are the model's own logits, as before.
        ``router_loss``, when given, receives a Mixture-of-Experts model's load-balancing loss."""
        input_ids = torch.cat([inputs[f"{prefix}_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs[f"{prefix}_mask"], inputs["completion_mask"]], dim=1)
        n = inputs["completion_ids"].size(1)
        routed = {"output_router_logits": True} if router_loss is not None else {}
        head = OutputHead(self.accelerator.unwrap_model(model)) if self._head_outside_forward is not False else None
        with self.accelerator.autocast(), head.capturing() if head else contextlib.nullcontext([]) as captured:
            outputs = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=n + 1, use_cache=False, **routed)
        if head and self._head_outside_forward is None:
            with self.accelerator.autocast():
                self._head_outside_forward = head.reproduces(captured, outputs.logits)
            if not self._head_outside_forward:
                log.warning(
                    "SDPO: this model's output head is not reproduced outside its forward; distilling from its "
                    "full (batch × length × vocabulary) logits instead, which costs more memory"
                )
                return self._completion_states(model, prefix, inputs, selected, router_loss)
        if router_loss is not None:
            router_loss.append(outputs.aux_loss)
        if head:
            states, project = captured[0][:, :-1][selected], head  # (N, H): position t predicts token t
        else:
            states, project = outputs.logits[:, :-1][selected], torch.nn.Identity()  # (N, V)

        def logits(chunk_states: torch.Tensor) -> torch.Tensor:
            with self.accelerator.autocast():
                return project(chunk_states).float() / self.temperature

        return states.unsqueeze(0), logits

    @torch.no_grad()
    def _teacher_logits(self, model, inputs: dict, selected: torch.Tensor) -> ChunkLogits:
        """The teacher's logits at the ``selected`` completion tokens on its reprompted context,
        chunk by chunk (``model``: the student)."""

        def forward(weights) -> ChunkLogits:
            states, logits = self._completion_states(weights, "teacher_prompt", inputs, selected)
            return lambda chunk: logits(states[:, chunk])

        return self.teacher.logits(model, forward)

    # -- generation batch: rewards, feedback, teacher prompts -------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._scored = (prompts, completions)
        weights = self.reward_weights.to(rewards_per_func.device)
        self._rewards = (rewards_per_func * weights).nansum(dim=1)
        return rewards_per_func

    def _feedback(self, n: int) -> list[str | None]:
        """Each local sample's feedback, joined over the reward functions that gave any (one
        function's is kept as it is, a :class:`~posttrain.tasks.Feedback` with where it locates the error)."""
        per_function = [f.last_feedback for f in self.reward_funcs if isinstance(f, FeedbackReward)]
        joined = []
        for i in range(n):
            texts = [feedback[i] for feedback in per_function if feedback and feedback[i]]
            joined.append(texts[0] if len(texts) == 1 else "\n\n".join(texts) if texts else None)
        return joined

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if not self.distills:
            return output
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        prompts, completions = self._scored
        n = len(prompts)
        ids = [row[mask.bool()].tolist() for row, mask in zip(output["completion_ids"], output["completion_mask"])]
        # A group may be spread over processes: every process sees the whole batch, builds its own share
        everything = gather_object([(p, message_text(c), f, i) for p, c, f, i in zip(prompts, completions, self._feedback(n), ids)])
        all_prompts, all_texts, all_feedback, all_ids = (list(column) for column in zip(*everything))
        share = range(self.accelerator.process_index * n, (self.accelerator.process_index + 1) * n)
        # Teacher prompts only: the loss appends the completion tokens from the batch's own tensors
        no_completions = [[] for _ in all_prompts]
        teacher_inputs = build_teacher_inputs(
            self.processing_class, all_prompts, no_completions, all_texts, self._rewards.tolist(), all_feedback, group_size, self.sdpo, select=share
        )
        device = self.accelerator.device
        prompt_ids = [torch.tensor(t.input_ids) for t in teacher_inputs]
        output["teacher_prompt_ids"] = pad(prompt_ids, padding_value=self.processing_class.pad_token_id, padding_side="left").to(device)
        output["teacher_prompt_mask"] = pad([torch.ones_like(ids) for ids in prompt_ids], padding_value=0, padding_side="left").to(device)
        has_signal = torch.tensor([float(t.has_signal) for t in teacher_inputs], device=device)
        output["self_distillation_mask"] = has_signal
        output["self_distillation_tokens"] = torch.tensor(
            [self._distilled_tokens(all_ids, i, t, all_feedback[i]) for i, t in zip(share, teacher_inputs)], device=device
        )
        # The distilled tokens of the whole generation batch, all processes: the loss's denominator (a 0-d
        # tensor, which TRL's batch splitting hands to every micro-batch whole)
        # and its samples (sequence_mean's), in one gather
        local = torch.stack([(has_signal * output["self_distillation_tokens"]).sum(), torch.tensor(float(n), device=device)])
        totals = self.accelerator.gather(local[None]).sum(dim=0)  # (processes, 2) summed
        output["num_distilled_tokens"], output["num_samples"] = totals[0], totals[1]
        self._metrics[mode]["self_distillation/signal_fraction"].append(self.accelerator.gather(has_signal).mean().item())
        if self.mixes_advantages:  # each local sample's r − mean of its group, not divided by the std
            groups = self._rewards.view(-1, group_size)
            centered = (groups - groups.mean(dim=1, keepdim=True)).view(-1)
            output["reward_advantages"] = centered[share.start : share.stop].to(device)
        return output

    def _distilled_tokens(self, all_ids: list[list[int]], index: int, teacher: TeacherInput, feedback: str | None) -> int:
        """How many leading completion tokens of sample ``index`` are distilled: all of them, or with
        ``distillation_span: to_divergence`` those up to and including its first mistake: where it
        leaves its demonstration, or, taught by feedback alone, where the verifier's
        :class:`~posttrain.tasks.Feedback` says it first goes wrong."""
        ids = all_ids[index]
        if self.sdpo.distillation_span == "all" or not teacher.has_signal:
            return len(ids)
        if teacher.demonstration is not None:
            position = first_divergence(ids, all_ids[teacher.demonstration])
        elif isinstance(feedback, Feedback):
            position = token_at_character(self.processing_class, ids, feedback.error_at)
        else:  # feedback that does not say where: all of it
            position = None
        return len(ids) if position is None else position + 1

    # -- loss ---------------------------------------------------------------------------------

    def _compute_loss(self, model, inputs):
        if not self.distills:
            return super()._compute_loss(model, inputs)
        distillation = self._self_distillation_loss(model, inputs)
        weight = self.sdpo.grpo_weight
        if weight == 0.0 or self.mixes_advantages:  # mixed in advantage space: GRPO's part is in that loss
            return distillation
        return weight * super()._compute_loss(model, inputs) + (1 - weight) * distillation

    def _self_distillation_loss(self, model, inputs) -> torch.Tensor:
        completion_ids = inputs["completion_ids"]
        positions = torch.arange(completion_ids.size(1), device=completion_ids.device)
        # (B, n): response tokens that are distilled (all, or those up to the divergence) on samples with a signal
        distilled = positions[None, :] < inputs["self_distillation_tokens"][:, None]
        mask = inputs["completion_mask"] * distilled * inputs["self_distillation_mask"][:, None]
        # Only those tokens (mixed with GRPO's advantages: every response token) are projected to the
        # vocabulary, one chunk at a time. With none, one token of weight 0 keeps the loss on the graph,
        # so that backward (and DDP's gradient sync) runs as usual.
        projected = inputs["completion_mask"] if self.mixes_advantages else mask
        selected = projected.bool()
        if not selected.any():
            selected[0, 0] = True

        # A Mixture-of-Experts student keeps its load-balancing loss, weighted as TRL's GRPO weights it
        # (router_aux_loss_coef); without it distillation alone would let the router collapse.
        router_loss = [] if self.aux_loss_enabled else None
        student_states, student_logits = self._completion_states(model, "prompt", inputs, selected, router_loss)
        teacher_logits = self._teacher_logits(model, inputs, selected)
        log_probs = distillation_inputs_in_chunks(
            student_states, student_logits, teacher_logits, completion_ids[selected][None],
            topk=self.sdpo.distillation_topk, chunk_size=self.sdpo.distillation_chunk_size,
        )  # (1, N) and (1, N, K): the student's top-k and the teacher's log-probs at them
        old_log_probs = inputs.get("old_per_token_logps")
        # vLLM samples: TRL's trainer/sampler ratio, per token (B, n) or per sequence (B, 1)
        sampler_ratio = inputs.get("importance_sampling_ratio")
        if sampler_ratio is not None:
            sampler_ratio = sampler_ratio.expand_as(mask)[selected][None]
        token_mask = mask[selected][None]  # (1, N): 1 on distilled tokens, 0 on the others (and the stand-in)
        old_log_probs = old_log_probs[selected][None] if old_log_probs is not None else None
        mode = "train" if self.model.training else "eval"
        entropy = log_probs.pop("student_entropy")
        if self.mixes_advantages:  # one policy gradient over every response token (TRL's num_items_in_batch)
            loss, metrics = mixed_advantage_loss(
                log_probs["student_log_probs"], log_probs["teacher_log_probs"],
                reward_advantages=inputs["reward_advantages"][:, None].expand_as(mask)[selected][None],
                response_mask=projected[selected][None], distill_mask=token_mask, grpo_weight=self.sdpo.grpo_weight,
                old_log_probs=old_log_probs, is_clip=self.sdpo.distillation_is_clip,
                num_tokens=self._per_micro_batch(inputs["num_items_in_batch"], mode), token_weights=sampler_ratio,
            )
        else:
            if self.sdpo.distillation_aggregation == "sequence_mean":  # 1/n_i on sample i's tokens, over all samples
                aggregation, denominator = sequence_mean_weights(mask)[selected][None], inputs["num_samples"]
            else:  # over all distilled tokens
                aggregation, denominator = None, inputs["num_distilled_tokens"]
            loss, metrics = self_distillation_loss(
                **log_probs,
                response_mask=token_mask,
                alpha=self.sdpo.distillation_alpha,
                is_clip=self.sdpo.distillation_is_clip,
                add_tail=self.sdpo.distillation_add_tail,
                old_log_probs=old_log_probs,
                num_tokens=self._per_micro_batch(denominator, mode),
                token_weights=sampler_ratio,
                aggregation_weights=aggregation,
            )
        self._log_distillation(token_mask, log_probs["student_log_probs"], log_probs["teacher_log_probs"], entropy, metrics)
        if router_loss:
            loss = loss + self.router_aux_loss_coef * router_loss[0] / (self.current_gradient_accumulation_steps if mode == "train" else 1.0)
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(router_loss[0].detach()).mean().item())
        return loss

    def _per_micro_batch(self, count: torch.Tensor, mode: str) -> torch.Tensor:
        """The loss's denominator: a count over the whole generation batch (all processes: its
        distilled tokens, or its samples), scaled so that the gradient of an optimizer step, averaged
        over processes by DDP and summed over the micro-batches of gradient accumulation, is the mean
        over the whole batch, whatever each process and micro-batch holds (TRL's normalisation of its
        token-level GRPO losses)."""
        count = count.clamp(min=1.0) / self.accelerator.num_processes
        if mode == "train":  # the generation batch spans steps_per_generation micro-batches
            count = count * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        return count

    def _log_distillation(self, mask, student_log_probs, teacher_log_probs, entropy, metrics) -> None:
        """Token-weighted means over all processes, over the distilled tokens that have a teacher
        signal: distillation loss, the teacher–student KL (reverse KL estimated on the sampled
        tokens) and the student's entropy (its collapse is what the paper's Table 6 reports)."""
        mode = "train" if self.model.training else "eval"
        tokens = mask.sum()
        kl_sum = ((student_log_probs - teacher_log_probs).detach() * mask).sum()
        divergence_sum = metrics["divergence"] * tokens
        entropy_sum = (entropy * mask).sum()
        totals = self.accelerator.reduce(torch.stack([divergence_sum, kl_sum, entropy_sum, tokens]), reduction="sum")
        count = totals[3].clamp(min=1.0)
        self._metrics[mode]["self_distillation/loss"].append((totals[0] / count).item())
        self._metrics[mode]["self_distillation/kl"].append((totals[1] / count).item())
        self._metrics[mode]["self_distillation/entropy"].append((totals[2] / count).item())
        if "is_weight" in metrics:
            self._metrics[mode]["self_distillation/is_weight"].append(metrics["is_weight"])

    # -- teacher state in checkpoints -----------------------------------------------------------

    def save_extra_state(self, checkpoint: Path) -> None:
        if not self.distills:
            return
        state = self.teacher.state_dict() if self.teacher.checkpointed else None  # every process: a sharded teacher is gathered
        if not self.args.should_save:
            return
        if state is not None:
            with atomic_open(checkpoint / TEACHER_STATE_FILE, "wb") as handle:
                torch.save(state, handle)
        write_json(checkpoint / TEACHER_INFO_FILE, {"teacher": self.sdpo.teacher, "step": self.state.global_step})

    def restore_extra_state(self, checkpoint: Path) -> None:
        """Load the teacher saved in ``checkpoint`` (before ``train(resume_from_checkpoint=...)``)."""
        if not self.distills:
            return
        info_path = Path(checkpoint) / TEACHER_INFO_FILE
        if not info_path.exists():
            raise PosttrainError(f"{checkpoint} has no {TEACHER_INFO_FILE}: it was not written by posttrain sdpo")
        saved = json.loads(info_path.read_text())
        if saved["teacher"] != self.sdpo.teacher:
            raise PosttrainError(f"{checkpoint} was trained with teacher '{saved['teacher']}', not '{self.sdpo.teacher}'")
        if self.teacher.checkpointed:
            state = torch.load(Path(checkpoint) / TEACHER_STATE_FILE, map_location="cpu", mmap=True)  # loading copies it to the device
            self.teacher.load_state_dict(state)
        log.info(f"restored the {self.sdpo.teacher} teacher from {checkpoint}")
