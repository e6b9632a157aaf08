"""Pennsieve's TS-Zarr viewer bundle (the default ``BUNDLE_LAYOUT``; docs/bundle.md).

Continuous channels (``raw`` and level groups of ``env``, ``mean`` and ``valid``) are written by
the work items (:mod:`.items`) and the reduce (:mod:`.reduce`); event channels (Units tables,
annotations, annotation files: :mod:`.units`, :mod:`.annotations`, :mod:`.events`), ``meta/``
and the metadata by the last step (:mod:`.finish`). The older layout's modules (``bundle.*``)
are left as they were, selected by ``BUNDLE_LAYOUT=legacy``.
"""
