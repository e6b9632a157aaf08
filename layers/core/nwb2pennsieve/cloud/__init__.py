"""The AWS side of nwb2pennsieve: what the Plan, WriteChunks, Finalize, UploadFiles and
CompleteImport functions do.

The Lambda handlers in ``functions/`` only parse their event into a model from
:mod:`nwb2pennsieve.cloud.models` and call :mod:`nwb2pennsieve.cloud.conversion` (Plan, WriteChunks, Finalize) or
:mod:`nwb2pennsieve.cloud.imports` (UploadFiles, CompleteImport); they share one
Powertools setup (:mod:`nwb2pennsieve.cloud.lambda_support`).
Reading goes through :class:`~nwb2pennsieve.source.s3.S3RangeReader` (ranged GETs, never
the whole object) and :class:`~nwb2pennsieve.source.direct.DirectChunkReader` (a work item's
HDF5 chunks fetched by their byte ranges).
"""
