"""The end of every posttrain training command: resume if asked, train, save (or stop on SIGTERM)."""

from __future__ import annotations

from pathlib import Path

from accelerate.utils import DistributedType
from transformers import Trainer

from posttrain.preemption import Preempted, stoppable_loop
from posttrain.runtime import get_logger
from posttrain.trainers.callbacks import StopOnSigterm
from posttrain.trainers.checkpoints import last_complete_checkpoint

log = get_logger(__name__)


def parallelism(accelerator) -> str | None:
    """How accelerate spreads the model, as it decided (not as the environment asked):
    "FSDP2", "DeepSpeed ZeRO-3", "DDP", or None for one process."""
    state = accelerator.state
    if state.distributed_type == DistributedType.FSDP:
        return f"FSDP{state.fsdp_plugin.fsdp_version}"
    if state.distributed_type == DistributedType.DEEPSPEED:
        return f"DeepSpeed ZeRO-{state.deepspeed_plugin.zero_stage}"
    return "DDP" if state.num_processes > 1 else None


def train_and_save(
    trainer: Trainer,
    output_dir: str,
    resume: bool,
    save_to: str | None = None,
) -> dict:
    """Train (from the last complete checkpoint in ``output_dir`` when ``resume``), save the
    final model or adapter and the tokenizer to ``save_to`` (default ``output_dir``), and return
    the train metrics (with ``load_best_model_at_end``, also which checkpoint was loaded as the
    final model and its metric).

    On resume the trainer first restores the state transformers does not know about (a β
    schedule, a teacher, TRL's token count; see :class:`~posttrain.trainers.checkpoints.CompleteCheckpoints`).

    SIGTERM ends training after the current optimizer step with a complete checkpoint at that
    step, and raises :class:`~posttrain.preemption.Preempted` instead of saving a final model.
    """
    last = last_complete_checkpoint(output_dir) if resume else None
    if last:
        log.info(f"resuming from {last}")
        trainer.restore_checkpoint_state(Path(last))
    args = trainer.args
    engine = parallelism(trainer.accelerator)
    log.info(f"{args.world_size} process(es){f' ({engine})' if engine else ''}; global batch {args.world_size * args.per_device_train_batch_size * args.gradient_accumulation_steps}")
    stopper = StopOnSigterm()
    trainer.add_callback(stopper)
    with stoppable_loop():
        result = trainer.train(resume_from_checkpoint=last)
    if stopper.stopped_at is not None and stopper.stopped_at < trainer.state.max_steps:
        raise Preempted(f"stopped by SIGTERM after step {stopper.stopped_at} of {trainer.state.max_steps}; "
                        f"checkpoint-{stopper.stopped_at} in {output_dir} is complete")
    save_to = save_to or output_dir
    trainer.save_model(save_to)  # every process takes part (sharded models); one writes
    if args.should_save:
        trainer.processing_class.save_pretrained(save_to)
    log.info(f"saved the final model to {save_to}")
    metrics = {"train_loss": result.training_loss, "global_step": result.global_step, **result.metrics}
    if args.load_best_model_at_end and trainer.state.best_model_checkpoint:
        log.info(f"the final model is {trainer.state.best_model_checkpoint} ({args.metric_for_best_model} {trainer.state.best_metric:.4g})")
        metrics.update(best_model_checkpoint=trainer.state.best_model_checkpoint, best_metric=trainer.state.best_metric)
    return metrics
