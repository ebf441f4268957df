"""Reading, validating and formatting training data: JSONL files, SFT and preference formats,
file and hub sources and their mixtures, rollouts files, the SDPO teacher's reprompt text, and the
text a reward model reads."""
