"""Topic models: ECRTM with LLM-guided DPO on topic-word distributions."""
