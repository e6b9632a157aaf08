"""The AWS side of nwb2pennsieve: what the Plan, WriteChunks, Finalize, UploadFiles,
CompleteImport and Starter functions do (Lambda side only: nothing here imports the local pool).

The Lambda handlers in ``functions/`` only parse their event into a model from
:mod:`nwb2pennsieve.cloud.models` and call one step: :mod:`~nwb2pennsieve.cloud.plan_step`,
:mod:`~nwb2pennsieve.cloud.write_chunks_step`, :mod:`~nwb2pennsieve.cloud.finalize_step`, or
:mod:`nwb2pennsieve.cloud.imports` (UploadFiles, CompleteImport); they share one
Powertools setup (:mod:`nwb2pennsieve.cloud.lambda_support`). Every key of a conversion's
records folder comes from :class:`~nwb2pennsieve.cloud.records.RecordsFolder`.
Reading goes through :class:`~nwb2pennsieve.source.s3.S3RangeReader` (ranged GETs, never
the whole object) and :class:`~nwb2pennsieve.source.direct.DirectChunkReader` (a work item's
HDF5 chunks fetched by their byte ranges).
"""
