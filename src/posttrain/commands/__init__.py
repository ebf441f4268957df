"""posttrain's commands, one module each: its config dataclass, its builder and ``run(config)``.

:mod:`posttrain.registry` names each command's config and run by import path (so the CLI and the
pipeline load only the command they run). A command that is a package of its own (``topics``,
``trigger``, ``trigger-eval``, ``run``) has a module here that re-exports its config and run
from that package. This is the layer above everything but the CLI: see docs/architecture.md.
"""
