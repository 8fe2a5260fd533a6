"""Downloads for the remote sources: HTTP with retries, a shared on-disk cache, safe archive extraction.

Nothing here knows about a particular source. A source describes where an object's mesh comes from in
a *fetch spec* (a plain dict carried in :class:`~voxforge.pipeline.sources.ObjectRecord`), and
:func:`~voxforge.pipeline.downloads.materialize.ensure_local` makes it a local file.
"""

from voxforge.pipeline.downloads.http import DownloadError, DownloadSettings

__all__ = ["DownloadError", "DownloadSettings"]
