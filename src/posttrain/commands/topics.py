"""``posttrain topics``: ECRTM, then LLM-guided DPO on its topic-word distributions.

The command is the topics package's training recipe (:mod:`posttrain.topics.train`); this module
is its home among the commands.
"""

from posttrain.topics.train import TopicsJobConfig, run_topics

__all__ = ["TopicsJobConfig", "run_topics"]
