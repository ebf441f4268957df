"""``posttrain.sandbox``: the public name of the code sandbox, :mod:`posttrain.tasks.sandbox`.

    from posttrain.sandbox import run_python

    result = run_python("print(input())", stdin="hi", timeout_s=5, memory_mb=512)
"""

from posttrain.tasks.sandbox import FILE_LIMIT, OUTPUT_LIMIT, SandboxResult, run_python

__all__ = ["FILE_LIMIT", "OUTPUT_LIMIT", "SandboxResult", "run_python"]
