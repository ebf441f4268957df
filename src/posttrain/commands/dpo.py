"""``posttrain dpo``: the DPO family with a dynamic β, on TRL's DPOTrainer; and TRL's other
preference losses.

The config names the loss, the β schedule and the pairs; the pairs (a ``.jsonl`` file, a task's
verifier-built pairs or a hub dataset such as HH-RLHF) are checked and normalised before any
model is loaded. The loss type picks the trainer:

* posttrain's own losses (sigmoid, ipo, hinge, robust; :data:`posttrain.losses.DPO_LOSSES`),
  any β schedule: :class:`posttrain.trainers.dpo.ScheduledDPOTrainer`;
* TRL's other DPO losses (:data:`TRL_DPO_LOSS_TYPES`), or a weighted list of DPO losses, with a
  constant β: TRL's DPOTrainer computes them (:class:`posttrain.trainers.dpo.GuardedDPOTrainer`);
* SimPO and ORPO (:data:`REFERENCE_FREE_LOSS_TYPES`), constant β, no reference model: TRL's CPO
  and ORPO trainers (:mod:`posttrain.trainers.reference_free`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from datasets import Dataset
from trl import DPOConfig

from posttrain.config import config_field
from posttrain.data.chat import with_template_arguments
from posttrain.data.preference import PreferenceDataArguments, normalize_pairs
from posttrain.errors import ConfigError
from posttrain.losses import BetaDPOSchedule, ConstantBeta, QuantileBetaSchedule
from posttrain.losses.dpo import DPO_LOSSES
from posttrain.models import LoraArguments, ModelArguments, load_tokenizer
from posttrain.models.loading import check_model_source, load_model, load_model_for_training
from posttrain.runtime import get_logger, seed_everything
from posttrain.trainers.callbacks import MetricsFileCallback
from posttrain.trainers.dpo import GuardedDPOTrainer, ScheduledDPOTrainer
from posttrain.trainers.loop import train_and_save
from posttrain.trainers.validation import BestMetricCheck, ValidationSettings

log = get_logger(__name__)

# The loss types of TRL 1.16's DPOTrainer (DPOConfig.loss_type) that posttrain does not compute
# itself: TRL's DPOTrainer computes them, with a constant β.
TRL_DPO_LOSS_TYPES = (
    "exo_pair", "nca_pair", "bco_pair", "sppo_hard", "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop",
    "sft", "sigmoid_norm",
)
# Reference-free losses, each on a TRL trainer of its own (trl.experimental in TRL 1.16).
REFERENCE_FREE_LOSS_TYPES = ("simpo", "orpo")
LOSS_TYPES = (*DPO_LOSSES, *TRL_DPO_LOSS_TYPES, *REFERENCE_FREE_LOSS_TYPES)
# trainer_args that change how TRL's DPOTrainer computes the loss, which posttrain's own losses
# replace: with those, they would be ignored.
TRL_LOSS_ARGS = ("ld_alpha", "f_divergence_type", "f_alpha_divergence_coef", "use_weighting")


@dataclass
class DPOJobConfig(PreferenceDataArguments, ValidationSettings, LoraArguments, ModelArguments):
    """Everything ``posttrain dpo`` needs."""

    max_length: int = config_field(512, help="Longest prompt + response in tokens (TRL truncates beyond).", ge=8)
    loss_type: str | list[str] = config_field(
        "sigmoid",
        help=f"Preference loss. posttrain's own, any beta_schedule: {', '.join(DPO_LOSSES)}. TRL's DPOTrainer, constant β: "
        f"{', '.join(TRL_DPO_LOSS_TYPES)}. Reference-free (no reference model), constant β: simpo (TRL's CPOTrainer), "
        "orpo (TRL's ORPOTrainer, β is its λ). Or a list of DPO losses that TRL sums with loss_weights "
        "(MPO: sigmoid,bco_pair,sft).",
    )
    loss_weights: list[float] | None = config_field(
        None, help="With a list of loss_type: the weight of each, in order (default 1 each)."
    )
    simpo_gamma: float = config_field(
        0.5, help="SimPO: target reward margin γ in −log σ(β·(mean log π(y_w) − mean log π(y_l)) − γ).", ge=0
    )
    label_smoothing: float = config_field(0.0, help="Assumed label-flip rate ε (cDPO for sigmoid, robust DPO; TRL's exo_pair, aot, simpo).", ge=0.0, le=0.499)
    beta: float = config_field(0.1, help="β (β0 for the dynamic schedules).", gt=0)
    beta_schedule: Literal["constant", "beta_dpo", "quantile"] = config_field("constant", help="How β changes during training.")
    beta_dpo_alpha: float = config_field(0.6, help="β-DPO: α, sensitivity of β to the batch's gap.")
    beta_dpo_momentum: float = config_field(0.9, help="β-DPO: momentum m of the running margin statistics.", ge=0, le=0.999)
    beta_dpo_rho: float = config_field(0.8, help="β-DPO: ρ, fraction of pairs kept per batch, in (0, 1].", gt=0, le=1)
    quantile_delta: float = config_field(0.1, help="Quantile β: δ, target share of margins above τ, in (0, 1).", gt=0, le=0.999)
    quantile_momentum: float = config_field(0.05, help="Quantile β: λ, smoothing of the threshold τ.", gt=0, le=1)
    quantile_alpha: float = config_field(0.005, help="Quantile β: α, log step of β per batch.", ge=0)
    quantile_gamma: float = config_field(2.0, help="Quantile β: γ, gain on the exceedance z-score.", ge=0)
    quantile_beta_min: float = config_field(0.0, help="Quantile β: lower clip.", ge=0)
    quantile_beta_max: float = config_field(2.0, help="Quantile β: upper clip.", gt=0)
    quantile_warmup_steps: int = config_field(120, help="Quantile β: batches at β0 before τ is set.", ge=0)
    rpo_alpha: float = config_field(
        0.0, help="RPO (Pang et al. 2024): weight of the NLL of chosen responses added to the loss (TRL's DPO losses: an "
        "'sft' term of this weight; simpo: CPO-SimPO's cpo_alpha; orpo has it built in).", ge=0
    )
    ref_model_name_or_path: str | None = config_field(
        None, help="A separate reference model (default: the initial policy; the adapter-disabled base under LoRA)."
    )
    precompute_ref_log_probs: bool = config_field(False, help="Compute reference log-probs once before training (no reference model in memory).")

    def __post_init__(self):
        super().__post_init__()
        if self.beta_schedule == "quantile" and not self.quantile_beta_min <= self.beta <= self.quantile_beta_max:
            raise ConfigError(f"config key 'beta' ({self.beta}) must lie in [quantile_beta_min, quantile_beta_max]")
        if self.loss_type == "robust" and self.label_smoothing >= 0.5:
            raise ConfigError("config key 'label_smoothing' must be < 0.5 for the robust loss")
        # one name, or a list of several (a YAML list, or --loss_type sigmoid,bco_pair,sft)
        names = [name.strip() for name in self.loss_type.split(",")] if isinstance(self.loss_type, str) else self.loss_type
        if not names:
            raise ConfigError("config key 'loss_type' is an empty list")
        self.loss_type = names[0] if len(names) == 1 else names
        self._check_loss()

    def loss_types(self) -> list[str]:
        """``loss_type`` as a list (one name, or the names of a weighted combination)."""
        return [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type)

    def posttrain_computes_loss(self) -> bool:
        """One of posttrain's own losses, which any β schedule works with; TRL computes the others."""
        names = self.loss_types()
        return len(names) == 1 and names[0] in DPO_LOSSES

    def trl_losses(self) -> tuple[list[str], list[float] | None]:
        """DPOConfig's ``loss_type`` and ``loss_weights``. Where TRL computes the loss, ``rpo_alpha`` is
        an ``sft`` term of that weight (how TRL 1.16 spells RPO); posttrain's own losses add it themselves."""
        names = self.loss_types()
        if self.posttrain_computes_loss():
            return names, None
        weights = self.loss_weights or [1.0] * len(names)
        if self.rpo_alpha:
            return [*names, "sft"], [*weights, self.rpo_alpha]
        return names, weights

    def _check_loss(self) -> None:
        """The loss type against the keys it cannot be combined with (ConfigErrors naming them)."""
        names = self.loss_types()
        for name in names:
            if name not in LOSS_TYPES:
                raise ConfigError(f"config key 'loss_type' must be one of {', '.join(LOSS_TYPES)} (or a list of DPO losses), got {name!r}")
        if len(names) > 1 and set(names) & set(REFERENCE_FREE_LOSS_TYPES):
            raise ConfigError(f"config key 'loss_type': {' and '.join(REFERENCE_FREE_LOSS_TYPES)} train alone, not in a list of losses")
        if len(set(names)) < len(names):
            raise ConfigError(f"config key 'loss_type' names a loss twice: {names}")
        if self.loss_weights is not None and (len(names) < 2 or len(self.loss_weights) != len(names)):
            raise ConfigError(
                f"config key 'loss_weights' needs one weight per loss of a list of loss_type: got {len(self.loss_weights)} "
                f"for {names}"
            )
        if self.beta_schedule != "constant" and not self.posttrain_computes_loss():
            raise ConfigError(
                f"config key 'beta_schedule' ({self.beta_schedule}) needs a loss_type posttrain computes itself "
                f"({', '.join(DPO_LOSSES)}): TRL computes loss_type {self.loss_type} with a constant β"
            )
        if self.loss_type in REFERENCE_FREE_LOSS_TYPES:
            for key in ("ref_model_name_or_path", "precompute_ref_log_probs"):
                if getattr(self, key):
                    raise ConfigError(f"config key '{key}' has no use with loss_type {self.loss_type}, which needs no reference model")
        if self.rpo_alpha and (self.loss_type == "orpo" or "sft" in names):
            raise ConfigError(
                f"config key 'rpo_alpha' adds the NLL of the chosen responses, which loss_type {self.loss_type} already has"
            )
        if "exo_pair" in names and self.label_smoothing == 0:
            raise ConfigError("config key 'label_smoothing' must be > 0 for loss_type exo_pair (EXO's ε; its paper suggests 1e-3)")
        if self.posttrain_computes_loss():
            for key in TRL_LOSS_ARGS:
                if key in self.trainer_args:
                    raise ConfigError(
                        f"trainer_args: '{key}' changes how TRL computes the loss, and posttrain computes loss_type "
                        f"{self.loss_type} itself (it would be ignored)"
                    )

    def make_schedule(self):
        if self.beta_schedule == "beta_dpo":
            return BetaDPOSchedule(self.beta, self.beta_dpo_alpha, self.beta_dpo_momentum, self.beta_dpo_rho)
        if self.beta_schedule == "quantile":
            return QuantileBetaSchedule(
                self.beta, self.quantile_delta, self.quantile_momentum, self.quantile_alpha, self.quantile_gamma,
                self.quantile_beta_min, self.quantile_beta_max, self.quantile_warmup_steps,
            )
        return ConstantBeta(self.beta)


def trl_args(config: DPOJobConfig):
    """The TRL config of the trainer ``config.loss_type`` trains on: DPOConfig, or CPOConfig for
    SimPO and ORPOConfig for ORPO."""
    common = {"beta": config.beta, "max_length": config.max_length}
    if config.loss_type in REFERENCE_FREE_LOSS_TYPES:
        from posttrain.trainers.reference_free import TRAINERS  # trl.experimental warns on import: only when used

        config_cls = TRAINERS[config.loss_type][0]
        common["remove_unused_columns"] = False  # their collator reads the raw columns (TRL sets it, with a warning)
        if config.loss_type == "simpo":
            common |= {"loss_type": "simpo", "simpo_gamma": config.simpo_gamma, "cpo_alpha": config.rpo_alpha,
                       "label_smoothing": config.label_smoothing}
        return config_cls(**config.trl_kwargs(config_cls, **common))
    loss_type, loss_weights = config.trl_losses()
    return DPOConfig(**config.trl_kwargs(
        DPOConfig,
        **common,
        loss_type=loss_type,
        loss_weights=loss_weights,
        label_smoothing=config.label_smoothing,
        precompute_ref_log_probs=config.precompute_ref_log_probs,
    ))


def build_dpo_trainer(config: DPOJobConfig):
    """Validate, load and normalise the pairs, load the models, return a ready trainer (which one
    depends on the loss type: see the module docstring)."""
    seed_everything(config.seed)
    check_model_source(config.model_name_or_path)
    if config.ref_model_name_or_path:
        check_model_source(config.ref_model_name_or_path)
    if not (config.dataset_name or config.dataset_mixture):
        raise ConfigError("config key 'dataset_name' is empty: give a .jsonl file of pairs or a hub dataset id (or a dataset_mixture)")
    args = trl_args(config)
    tokenizer = load_tokenizer(config.model_name_or_path, config.base_model_mode, config.trust_remote_code)
    rows, eval_rows = config.training_rows(preference=True)
    pairs = with_template_arguments(normalize_pairs(rows, config.base_model_mode, config.hh_format), config.chat_template_kwargs)
    eval_pairs = (with_template_arguments(normalize_pairs(eval_rows, config.base_model_mode, config.hh_format),
                                          config.chat_template_kwargs) if eval_rows else None)
    log.info(f"DPO ({config.loss_type}, β schedule {config.beta_schedule}) on {len(pairs)} pairs from {config.dataset_name or 'the dataset_mixture'}")
    if eval_pairs:
        log.info(f"evaluating on {len(eval_pairs)} held-out pairs every {config.every} steps (β and the margin log follow training only)")
    model = load_model_for_training(config)
    trainer_kwargs = dict(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(pairs),
        eval_dataset=Dataset.from_list(eval_pairs) if eval_pairs else None,
        processing_class=tokenizer,
        peft_config=config.lora_config(model),
        callbacks=[MetricsFileCallback(config.output_dir), BestMetricCheck()],
        on_nonfinite_loss=config.on_nonfinite_loss,
    )
    if config.loss_type in REFERENCE_FREE_LOSS_TYPES:
        from posttrain.trainers.reference_free import TRAINERS

        return TRAINERS[config.loss_type][1](**trainer_kwargs)
    ref_model = (
        load_model(config.ref_model_name_or_path, config.dtype, config.trust_remote_code)
        if config.ref_model_name_or_path
        else None
    )
    if not config.posttrain_computes_loss():
        return GuardedDPOTrainer(ref_model=ref_model, base_model_mode=config.base_model_mode, **trainer_kwargs)
    return ScheduledDPOTrainer(
        ref_model=ref_model,
        base_model_mode=config.base_model_mode,
        beta_schedule=config.make_schedule(),
        loss_type=config.loss_types()[0],
        label_smoothing=config.label_smoothing,
        rpo_alpha=config.rpo_alpha,
        **trainer_kwargs,
    )


def run_dpo(config: DPOJobConfig) -> dict:
    """Train; save the final model (or adapter); return the train metrics and the final β."""
    trainer = build_dpo_trainer(config)
    metrics = train_and_save(trainer, config.output_dir, config.resume)
    final_beta = trainer.beta_schedule.beta if isinstance(trainer, ScheduledDPOTrainer) else config.beta
    return {**metrics, "final_beta": float(final_beta)}
