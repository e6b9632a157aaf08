"""``nwb2pennsieve`` with zlib instead of ISA-L behind the compressed gzip levels: for comparison only.

    .venv/bin/python bench/zlib_convert.py convert FILE -o DIR --gzip-level 1

The local pool forks its workers from this process, so they inherit the swap.
"""

from __future__ import annotations

import sys
import zlib

from nwb2pennsieve.local.cli import main
from nwb2pennsieve.output import compression

compression.deflate = zlib

if __name__ == "__main__":
    sys.exit(main())
