"""Let accelerate select FSDP or DeepSpeed on CPU processes, for the sharding tests (not a test module).

accelerate turns FSDP and DeepSpeed on only for accelerator devices: ``AcceleratorState``
ignores ``ACCELERATE_USE_FSDP`` and ``ACCELERATE_USE_DEEPSPEED`` for gloo processes and falls back
to DDP, while torch's FSDP2 shards over gloo and DeepSpeed has a CPU accelerator. After
:func:`sharding_on_cpu` accelerate selects the engine there too, with the plugin it built from the
environment; nothing else changes: the trainer prepares the model through accelerate's own
FSDP2 or DeepSpeed code. ``observed_cli.py`` and ``sigterm_cli.py`` call it when
``SHARDING_ON_CPU=1``.
"""

from __future__ import annotations

import os

from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin


def sharding_on_cpu() -> None:
    init = AcceleratorState.__init__
    chosen = {}  # the DeepSpeed plugin of the trainer's accelerator, for states created after it

    def init_with_sharding(self, *args, fsdp_plugin=None, deepspeed_plugin=None, **kwargs):
        init(self, *args, fsdp_plugin=fsdp_plugin, deepspeed_plugin=deepspeed_plugin, **kwargs)
        if self.distributed_type != DistributedType.MULTI_CPU:  # accelerate's choice for gloo processes
            return
        deepspeed_plugin = chosen.setdefault("deepspeed", deepspeed_plugin) or deepspeed_plugin
        if deepspeed_plugin is not None:  # what accelerate does for DeepSpeed on an accelerator
            self.distributed_type = DistributedType.DEEPSPEED
            self.deepspeed_plugins = {"default": deepspeed_plugin}
            deepspeed_plugin.select(_from_accelerator_state=True)
            deepspeed_plugin.set_mixed_precision(self._mixed_precision)
            deepspeed_plugin.set_deepspeed_weakref()
        elif fsdp_plugin is not None or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
            self.fsdp_plugin = fsdp_plugin or getattr(self, "fsdp_plugin", None) or FullyShardedDataParallelPlugin()
            self.distributed_type = DistributedType.FSDP

    AcceleratorState.__init__ = init_with_sharding

