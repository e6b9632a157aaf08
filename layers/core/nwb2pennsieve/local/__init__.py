"""The local side: the ``nwb2pennsieve`` command (:mod:`.cli`), converting a file on this machine
(:mod:`.convert`, planning in a child process: :mod:`.planning`), the process pool over the work
items (:mod:`.pool`) and ``inspect`` (:mod:`.inspect`)."""

from .convert import ConversionResult, convert_file
from .planning import plan_file

__all__ = ["ConversionResult", "convert_file", "plan_file"]
