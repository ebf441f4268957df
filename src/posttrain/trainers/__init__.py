"""Trainers: posttrain's commands on top of TRL's SFTTrainer, DPOTrainer and GRPOTrainer."""
