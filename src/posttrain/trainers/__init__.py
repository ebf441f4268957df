"""Trainers: TRL's SFTTrainer, DPOTrainer and GRPOTrainer with posttrain's losses, and their
mixins (checkpoints, callbacks, the non-finite-loss guard, SDPO teachers, rewards, the training
loop). The commands that build them are in :mod:`posttrain.commands`."""
