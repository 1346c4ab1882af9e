"""A NumPy stand-in for a CUDA device, for testing the GPU streaming loop without a GPU.

Operations queued on a stream do not run when they are issued: they run only when the host
synchronises on an event recorded after them (or a stream waits on such an event), as on a real
GPU where nothing guarantees an async copy has happened before its event completes. A loop that
reuses a pinned buffer before its upload event, or reads outputs before their download event,
therefore sees stale or half-written data and the tests fail.

Combines run with the CPU backend's kernels; decoding follows the FITS rules documented in
kernels/sk_decode.cuh, written again here with NumPy. Resampling reads the staged tile layout of
skystack/backends/gpu/stack_streaming.py (parsed again here) and resamples with the CPU code
(pixmap's interpolation, interp.resample on the band pasted into a NaN frame of the full shape,
so a band that misses a needed pixel shows up as NaN, and interp.pixel_area_ratio).
"""

from __future__ import annotations

import threading

import numpy as np

from skystack.backends.base import FrameParams, TileOutputs
from skystack.backends.cpu import CpuBackend
from skystack.backends.gpu.backend import StreamingBackend
from skystack.regrid.interp import pixel_area_ratio, resample
from skystack.regrid.pixmap import _interp_map

KIND_DTYPES = {0: "u1", 1: ">i2", 2: ">i4", 3: ">i8", 4: ">f4", 5: ">f8", 6: "<f4"}
# Frame table of a staged stack tile (kernels/sk_resample.cuh, sk::TableField).
TABLE_FIELDS = 10


class FakeOutOfMemory(MemoryError):
    pass


class _Stream:
    def __init__(self) -> None:
        self.queue: list = []
        self.done = 0


class _Event:
    def __init__(self) -> None:
        self.stream: _Stream | None = None
        self.pos = 0


def decode_numpy(staged: np.ndarray, kind: int, bscale: float, bzero: float, blank: int,
                 has_blank: bool, npix: int) -> np.ndarray:
    dt = np.dtype(KIND_DTYPES[kind])
    raw = np.frombuffer(staged[: dt.itemsize * npix].tobytes(), dt)
    if kind == 6:
        return raw.astype(np.float32)
    unscaled = bscale == 1.0 and bzero == 0.0
    if dt.kind == "f":
        if unscaled:
            out = raw.astype(np.float32)
        elif dt.itemsize == 4:
            out = (raw.astype(np.float32) * np.float32(bscale) + np.float32(bzero))
        else:
            out = (raw.astype(np.float64) * bscale + bzero).astype(np.float32)
        return out.astype(np.float32)
    if unscaled:
        out = raw.astype(np.float32)
    elif dt.itemsize <= 2 and bscale == 1.0 and float(bzero).is_integer():
        out = raw.astype(np.float32) + np.float32(bzero)
    else:
        out = (raw.astype(np.float64) * bscale + bzero).astype(np.float32)
    if has_blank:
        out[raw == blank] = np.nan
    return out


class FakeDevice:
    """See module docstring. ``fail_combine_at``: the n-th combine raises out-of-memory once;
    ``max_alloc``: device allocations larger than this many bytes raise out-of-memory."""

    def __init__(self, free: int = 1 << 30, fail_combine_at: int | None = None,
                 max_alloc: int | None = None) -> None:
        self.free = free
        self.fail_combine_at = fail_combine_at
        self.max_alloc = max_alloc
        self.combines = 0
        self.resamples = 0
        self.skipped_planes = 0
        self.releases = 0
        self.allocated_device = 0
        self.allocated_pinned = 0
        self._lock = threading.RLock()
        self._cpu = CpuBackend(threads=1)

    # memory
    def free_bytes(self) -> int:
        return self.free

    def empty(self, n, dtype):
        nbytes = int(n) * np.dtype(dtype).itemsize
        if self.max_alloc is not None and nbytes > self.max_alloc:
            raise FakeOutOfMemory(f"cannot allocate {nbytes} bytes")
        self.allocated_device += nbytes
        return np.full(int(n), 0xAB, np.uint8).view(dtype) if np.dtype(dtype).itemsize == 1 \
            else np.full(int(n), -12345, dtype)

    def pinned(self, n, dtype):
        self.allocated_pinned += int(n) * np.dtype(dtype).itemsize
        return np.zeros(int(n), dtype)

    def upload(self, host):
        return np.array(host, copy=True)

    def release(self) -> None:
        self.releases += 1

    def is_out_of_memory(self, exc) -> bool:
        return isinstance(exc, FakeOutOfMemory)

    # streams
    def stream(self):
        return _Stream()

    def event(self):
        return _Event()

    def record(self, event, stream) -> None:
        with self._lock:
            event.stream = stream
            event.pos = len(stream.queue)

    def wait(self, stream, event) -> None:
        with self._lock:
            target, pos = event.stream, event.pos
            stream.queue.append(lambda: self._run(target, pos) if target else None)

    def synchronize(self, event) -> None:
        with self._lock:
            if event.stream is not None:
                self._run(event.stream, event.pos)

    def _run(self, stream: _Stream, upto: int) -> None:
        while stream.done < upto:
            op = stream.queue[stream.done]
            stream.done += 1
            op()

    def _enqueue(self, stream, op) -> None:
        with self._lock:
            stream.queue.append(op)

    def copy_h2d(self, dst, src, nbytes, stream) -> None:
        def op():
            dst.view(np.uint8)[:nbytes] = src.view(np.uint8)[:nbytes]
        self._enqueue(stream, op)

    def copy_d2h(self, dst, src, nbytes, stream) -> None:
        def op():
            dst.view(np.uint8)[:nbytes] = src.view(np.uint8)[:nbytes]
        self._enqueue(stream, op)

    # kernels
    def decode(self, staged, tables, n_frames, npix, block, stream) -> None:
        def op():
            for k in range(n_frames):
                off = int(tables["offsets"][k])
                block[k * npix:(k + 1) * npix] = decode_numpy(
                    staged[off:], int(tables["kinds"][k]), float(tables["bscale"][k]),
                    float(tables["bzero"][k]), int(tables["blank"][k]),
                    bool(tables["has_blank"][k]), npix)
        self._enqueue(stream, op)

    def combine(self, block, n_frames, npix, choice, options, params, outs, stream) -> None:
        self.combines += 1
        if self.fail_combine_at is not None and self.combines == self.fail_combine_at:
            self.fail_combine_at = None
            raise FakeOutOfMemory("out of memory while launching")

        def op():
            out = TileOutputs(outs[0][:npix], outs[1][:npix], outs[2][:npix])
            fp = FrameParams(params["scale"], params["zero"], params["weights"])
            self._cpu.combine_tile(block[: n_frames * npix].reshape(n_frames, npix), options,
                                   fp, out)
        self._enqueue(stream, op)


    def resample(self, staged, spec, block, stream) -> None:
        self.resamples += 1

        def take(offset, dtype, shape):
            count = int(np.prod(shape))
            raw = staged[offset:offset + count * np.dtype(dtype).itemsize].copy()
            return raw.view(dtype).reshape(shape)

        def op():
            n, rows, cols = spec.n_frames, spec.tile_rows, spec.tile_cols
            npix = rows * cols
            table = take(0, np.int64, (n, TABLE_FIELDS))
            start_r = take(spec.off_start_r, np.int32, (rows,)).astype(np.int64)
            start_c = take(spec.off_start_c, np.int32, (cols,)).astype(np.int64)
            w_r = take(spec.off_w_r, np.float64, (rows, spec.pr))
            w_c = take(spec.off_w_c, np.float64, (cols, spec.pc))
            nodes = (spec.node_rows, spec.node_cols)
            for k in range(n):
                plane = block[k * npix:(k + 1) * npix].reshape(rows, cols)
                flags, band, row0, col0, brows, bcols, height, width, onx, ony = table[k]
                if not flags & 1:
                    self.skipped_planes += 1
                    plane[...] = np.nan
                    continue
                x = np.empty((rows, cols))
                y = np.empty((rows, cols))
                _interp_map(take(onx, np.float64, nodes), take(ony, np.float64, nodes),
                            start_r, w_r, start_c, w_c, x, y)
                frame = np.full((height, width), np.nan, np.float32)
                frame[row0:row0 + brows, col0:col0 + bcols] = take(band, np.float32,
                                                                   (brows, bcols))
                values = resample(frame, x, y, spec.interp)
                if spec.conserve_flux:
                    values *= pixel_area_ratio(x, y).astype(np.float32)
                plane[...] = values
        self._enqueue(stream, op)

    def coverage(self, block, n_frames, npix, exptimes, coverage, expmap, stream) -> None:
        def op():
            covered = np.isfinite(block[:n_frames * npix].reshape(n_frames, npix))
            coverage[:npix] = covered.sum(axis=0)
            e = np.zeros(npix, np.float32)
            for k in range(n_frames):
                np.add(e, exptimes[k], out=e, where=covered[k])
            expmap[:npix] = e
        self._enqueue(stream, op)


class FakeGpuBackend(StreamingBackend):
    """A backend that streams like the GPU backend (the same :class:`StreamingBackend`
    ``run_combine`` and ``run_stack``), through a :class:`FakeDevice`."""

    def __init__(self, device: FakeDevice) -> None:
        self.device = device
        self.last_stats = None

    def describe(self) -> str:
        return "fake gpu"

    def combine_tile(self, *a) -> None:  # pragma: no cover - the loop never calls it
        raise AssertionError("streaming backends are not handed decoded blocks")

    def close(self) -> None:
        pass
