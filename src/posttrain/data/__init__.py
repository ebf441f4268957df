"""Reading, validating and formatting training data: JSONL files, SFT and preference formats,
file and hub sources, rollouts files, and the SDPO teacher's reprompt text."""
