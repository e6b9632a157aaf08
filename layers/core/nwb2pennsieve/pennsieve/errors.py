"""Errors of the Pennsieve import: one clear line each, never a token or a secret."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from ..errors import Nwb2PennsieveError


def safe_url(url: str) -> str:
    """``url`` without its query string (a presigned URL's query is a credential)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme else parts.path


_URL_QUERY = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\"]*")


def redact(text: str) -> str:
    """``text`` with the query string of every URL removed (presigned signatures, tokens)."""
    return _URL_QUERY.sub(r"\1?<redacted>", text)


class PennsieveError(Nwb2PennsieveError):
    """Pennsieve answered something the import cannot go on with."""


class PennsieveHTTPError(PennsieveError):
    """A call failed: ``status`` is the HTTP status (``None`` for a connection failure)."""

    def __init__(self, method: str, url: str, status: int | None, message: str = "") -> None:
        self.method = method
        self.url = safe_url(url)
        self.status = status
        what = f"HTTP {status}" if status is not None else "no answer"
        detail = f": {message[:300]}" if message else ""
        super().__init__(f"Pennsieve {method} {self.url} failed ({what}){detail}")

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500


class PennsieveAuthError(PennsieveError):
    """No valid token could be obtained (bad key/secret, revoked refresh token, no credentials)."""


class TargetNotFoundError(PennsieveError):
    """Nothing says where to import (no integration id, dataset/package ids or S3 metadata)."""


class ChannelError(PennsieveError):
    """The output's channels cannot be matched to or created on the target package."""


class ChannelCreateError(ChannelError):
    """Creating channels failed; ``retryable`` when a later attempt may succeed (5xx, no answer)."""

    def __init__(self, message: str, *, retryable: bool, file: str | None = None) -> None:
        self.retryable = retryable
        super().__init__(message, file=file)


class ImportBusyError(PennsieveError):
    """Another run holds the import's claim (it is preparing the same import): retry when it is done."""


class UploadError(PennsieveError):
    """Some files were not uploaded; ``failed`` lists them all. A rerun uploads only those."""

    def __init__(
        self,
        failed: list[str],
        total: int,
        *,
        first_reason: str = "",
        then: str = "rerun to upload only the missing files",
    ) -> None:
        self.failed = sorted(failed)
        self.total = total
        self.first_reason = first_reason
        self.then = then
        shown = ", ".join(self.failed[:5]) + (f" (+{len(self.failed) - 5} more)" if len(self.failed) > 5 else "")
        reason = f"; first error: {first_reason}" if first_reason else ""
        super().__init__(
            f"{len(self.failed)} of {total} files failed to upload: {shown}{reason};"
            f" the list is in import-failed.json; {then}"
        )


# -- the viewer-asset flow ----------------------------------------------------------------------


class AssetConflictError(PennsieveError):
    """The package holds a viewer asset this import must not touch (another recording's, or one
    nwb2pennsieve did not create): nothing was created and nothing deleted."""


class ChannelConflictError(PennsieveError):
    """A channel of the output matches a channel of the package that belongs to another viewer
    asset (or to none: a legacy import); nothing was created and nothing deleted."""


class CredentialsUnavailableError(PennsieveAuthError):
    """The asset's upload credentials expired (or were refused) and Pennsieve could not renew them."""

    def __init__(self, message: str, *, unsupported: bool = False, file: str | None = None) -> None:
        self.unsupported = unsupported
        super().__init__(message, file=file)


class AssetAccessError(PennsieveAuthError):
    """The asset's bucket refused the upload credentials (not an expiry: a refresh did not help)."""


class RangesRejectedError(PennsieveError):
    """The time-series service refused chunk ranges (HTTP 400 with ``invalid_chunks``)."""


class AssetImportError(PennsieveError):
    """An asset-flow import stopped; the message ends with what became of the asset (left
    unfinished for a rerun to resume, or cleaned up) and ``resumable`` says which."""

    def __init__(self, message: str, *, resumable: bool, file: str | None = None) -> None:
        self.resumable = resumable
        super().__init__(message, file=file)
