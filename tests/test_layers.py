"""The layers of skystack and the contracts between them.

* Imports go downward only: the import graph of skystack's modules (``tools/import_graph.py``,
  module- and function-level imports) has no cycle between packages, and no module imports a
  private name of another; ``skystack.core`` sits below the file formats and the engines.
* Every compute engine follows :class:`skystack.backends.base.Backend` (``run_combine``,
  ``run_stack``, ``thread_safe``), every pixel source
  :class:`skystack.io.contracts.PixelSource` (its ``to_spec`` rebuilds the same pixels through
  ``open``), every sink :class:`skystack.io.contracts.TileSink`.
"""

from __future__ import annotations

import importlib.util
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from skystack.errors import SkystackError

ROOT = Path(__file__).resolve().parent.parent


def _import_graph():
    spec = importlib.util.spec_from_file_location("import_graph",
                                                  ROOT / "tools" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def graph():
    tool = _import_graph()
    return tool, tool.build(ROOT / "src")


def test_no_cycle_between_packages(graph):
    tool, g = graph
    cycles = tool.package_cycles(g)
    assert cycles == [], [tool.cycle_evidence(g, c) for c in cycles]


def test_no_private_name_imported_from_another_module(graph):
    _, g = graph
    assert g.private == []


def test_core_is_below_the_formats_and_the_engines(graph):
    """core may use only the foundations (config, errors, regrid): the loops reach files,
    engines and sinks through their contracts, never by import."""
    tool, g = graph
    below = g.package_edges()["skystack.core"]
    assert below <= {"skystack.config", "skystack.errors", "skystack.regrid"}, below
    layers = tool.layers(g)
    level = {p: k for k, layer in enumerate(layers) for p in layer}
    assert level["skystack.core"] < level["skystack.io"] < level["skystack.backends"] \
        < level["skystack.cluster"] < level["skystack.executor"] < level["skystack.api"]


def test_engines_follow_the_backend_protocol():
    from skystack.backends.base import Backend
    from skystack.backends.cpu import CpuBackend
    from skystack.backends.gpu.backend import GpuBackend
    from tests.fake_device import FakeDevice, FakeGpuBackend

    cpu = CpuBackend(threads=1)
    try:
        assert isinstance(cpu, Backend) and cpu.thread_safe
    finally:
        cpu.close()
    fake = FakeGpuBackend(FakeDevice())
    assert isinstance(fake, Backend) and not fake.thread_safe
    for name in ("run_combine", "run_stack", "combine_tile", "describe", "close"):
        assert callable(getattr(GpuBackend, name)), name
    assert GpuBackend.thread_safe is False and GpuBackend.name == "gpu"


def _read_all(source, shape):
    from skystack.core.tiles import Tile

    out = np.empty(shape, np.float32)
    source.read(Tile(0, shape[0], 0, shape[1]), out)
    return out


@pytest.fixture
def sources(tmp_path):
    """One frame of each kind of source, (label, source, shape)."""
    from skystack.io.inputs import load_frames
    from skystack.night.calibrate import Calibration, calibrated_frame, hold_in_memory

    rng = np.random.default_rng(2)
    shape = (20, 24)
    raw = rng.integers(0, 3000, shape).astype(np.int16)
    mask = np.zeros(shape, np.uint8)
    mask[3, 4] = 1
    fits.HDUList([fits.PrimaryHDU(raw, header=fits.Header([("BZERO", 32768)])),
                  fits.ImageHDU(mask, name="MASK")]).writeto(tmp_path / "raw.fits")
    fits.HDUList([fits.PrimaryHDU(),
                  fits.CompImageHDU(raw.astype(np.float32), compression_type="GZIP_1"),
                  fits.CompImageHDU(mask, name="MASK", compression_type="GZIP_1")]
                 ).writeto(tmp_path / "c.fits")
    fits.PrimaryHDU(np.full(shape, 1.5, np.float32)).writeto(tmp_path / "flat.fits")
    raw_f, comp_f, flat_f = load_frames([tmp_path / "raw.fits", tmp_path / "c.fits",
                                         tmp_path / "flat.fits"])
    array_f, = load_frames([raw.astype(np.float32)])
    master = hold_in_memory(flat_f)
    cal = calibrated_frame(raw_f, Calibration(flat=master))
    return [(f.label, f.source, f.shape) for f in (raw_f, comp_f, flat_f, master, cal)], array_f


def test_sources_follow_the_pixel_source_protocol(sources):
    """Each source is a PixelSource whose spec (picklable) reopens the very same pixels; an
    in-memory one refuses in one line naming the frame."""
    from skystack.io.contracts import PixelSource, SourceSpec
    from skystack.io.reader import HandlePool

    file_sources, array_frame = sources
    pool = HandlePool()
    try:
        for label, source, shape in file_sources:
            assert isinstance(source, PixelSource), label
            spec = pickle.loads(pickle.dumps(source.to_spec(label)))
            assert isinstance(spec, SourceSpec), label
            assert all(Path(p).is_absolute() for p in spec.files()), label
            again = spec.open(pool)
            assert np.array_equal(_read_all(again, shape), _read_all(source, shape),
                                  equal_nan=True), label
    finally:
        pool.close()
    assert isinstance(array_frame.source, PixelSource)
    with pytest.raises(SkystackError, match=r"array\[0\]: in-memory input cannot run"):
        array_frame.source.to_spec(array_frame.label)


def test_sinks_follow_the_tile_sink_protocol(tmp_path):
    from skystack.backends.base import FrameParams
    from skystack.cluster.output import BandWriter, OutputSpec
    from skystack.config import CombineOptions
    from skystack.io.contracts import TileSink
    from skystack.io.writer import FitsTileWriter
    from skystack.pipeline import ArraySink
    from skystack.uncertainty import uncertainty_sinks

    writer = FitsTileWriter(tmp_path / "o.fits", (4, 4), fits.Header(), max_count=2)
    try:
        band = BandWriter(OutputSpec(writer.tmp_path, (4, 4), tuple(writer.plane_layout())))
        band.finish()
        options = CombineOptions(uncertainty="model").validated()
        params = FrameParams(np.ones(2), np.zeros(2), np.ones(2), np.ones(2), np.ones(2))
        wrapped, = uncertainty_sinks([ArraySink((4, 4))], options, params)
        for sink in (writer, ArraySink((4, 4)), band, wrapped):
            assert isinstance(sink, TileSink), type(sink).__name__
    finally:
        writer.abort()
