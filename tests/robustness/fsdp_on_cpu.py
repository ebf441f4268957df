"""Let accelerate select FSDP on CPU processes, for the FSDP2 tests (not a test module).

accelerate turns FSDP on only for accelerator devices: ``AcceleratorState`` ignores
``ACCELERATE_USE_FSDP`` for gloo processes and falls back to DDP, while torch's FSDP2 itself
shards over gloo. After :func:`fsdp_on_cpu` it selects FSDP there too; nothing else changes, the
trainer prepares the model through accelerate's own FSDP2 code. ``observed_cli.py`` and
``sigterm_cli.py`` call it when ``FSDP_ON_CPU=1``.
"""

from __future__ import annotations

from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin


def fsdp_on_cpu() -> None:
    init = AcceleratorState.__init__

    def init_with_fsdp(self, *args, fsdp_plugin=None, **kwargs):
        init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if self.distributed_type == DistributedType.MULTI_CPU:  # accelerate's choice for gloo processes
            self.fsdp_plugin = fsdp_plugin or getattr(self, "fsdp_plugin", None) or FullyShardedDataParallelPlugin()
            self.distributed_type = DistributedType.FSDP

    AcceleratorState.__init__ = init_with_fsdp
