"""Picklable descriptions of pixel sources, reopened by path on a worker.

The sources of :mod:`skystack.io.reader` hold open file descriptors (a :class:`HandlePool`)
and locks, which cannot travel to another process. A *spec* records only what is needed to
rebuild the source on a worker: the file's absolute path, the data offset, shape and scaling
found when the client scanned the headers (so workers never parse a FITS header again), and for
calibrated frames (``skystack night``) the raw source plus the masters, also by path.

Each source describes itself (``to_spec``, :class:`skystack.io.contracts.PixelSource`) and each
spec rebuilds its source (``open``) and names its files (``files``): :class:`RawSpec` and
:class:`CompressedSpec` in :mod:`skystack.io.reader`, :class:`CalibratedSpec` and
:class:`MasterSpec` in :mod:`skystack.night.calibrate`. The functions here are what the driver
and the jobs call.

Every path must be visible under the same name on every worker (shared storage: NFS, Lustre,
a local disk for a :class:`~distributed.LocalCluster`). In-memory inputs (arrays, HDUs, CCDData)
cannot be described: pixel data never passes through the client or the scheduler.
"""

from __future__ import annotations

from ..errors import SkystackError
from ..io.contracts import PixelSource, SourceSpec
from ..io.reader import HandlePool

__all__ = ["Spec", "source_spec", "open_source", "spec_files"]

Spec = SourceSpec


def source_spec(source: PixelSource, label: str) -> Spec:
    """The spec of a frame's pixel source; ``label`` names the frame in the error raised for a
    source that cannot be reopened elsewhere (in-memory data)."""
    if not hasattr(source, "to_spec"):  # a source made by an embedding application
        raise SkystackError(f"{label}: input of type {type(source).__name__} cannot run on a "
                            "cluster (give FITS files on storage that every worker can read)")
    return source.to_spec(label)


def open_source(spec: Spec, pool: HandlePool) -> PixelSource:
    """Rebuild the source a spec describes, its file descriptors in ``pool`` (on the worker)."""
    return spec.open(pool)


def spec_files(spec: Spec) -> list[str]:
    """Every file a spec reads (for the run's fingerprint: their sizes and mtimes)."""
    return spec.files()
