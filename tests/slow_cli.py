"""``python -m tests.slow_cli ARGS``: the nwb2pennsieve command with a slow writer (for signal tests).

Each block the writer scales sleeps ``SLOW_BLOCK_SECONDS`` (default 0.05) first, so a small file
takes seconds to convert and a test can interrupt it mid-way. The pool forks its workers
(``local.pool_context``), so they run the slowed writer too.
"""

from __future__ import annotations

import os
import sys
import time

from nwb2pennsieve.__main__ import main
from nwb2pennsieve.write import chunks as writer

_real = writer._to_big_endian_uv
_delay = float(os.environ.get("SLOW_BLOCK_SECONDS", "0.05"))


def _slow(*args, **kwargs):  # type: ignore[no-untyped-def]
    time.sleep(_delay)
    return _real(*args, **kwargs)


writer._to_big_endian_uv = _slow  # type: ignore[assignment]

if __name__ == "__main__":
    sys.exit(main())
