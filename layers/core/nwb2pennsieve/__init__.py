"""nwb2pennsieve: NWB ElectricalSeries → Pennsieve time-series chunk files.

The package is the whole product: the Lambda handlers in ``functions/`` and the command
line in :mod:`nwb2pennsieve.local.cli` only parse their input and call into it.
"""

__version__ = "0.1.0"
