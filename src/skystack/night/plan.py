"""Planning a night: headers in, jobs out. No pixel is read here.

:func:`plan_night` takes the scanned headers (:func:`skystack.night.scan.scan`) and returns a
:class:`NightPlan`: the jobs in build order (per camera: :class:`MasterJob` bias, darks, flats,
then :class:`BadpixJob`, then one :class:`StackJob` per object and filter), each with its final
file name (:mod:`skystack.night.names`), the masters of each camera, each object's lights
(every filter) and the light whose grid its stacks share, and a :class:`FrameRecord` per file
saying why it is skipped when it is. :func:`calibration_choice` says which masters calibrate a
frame. Building is :mod:`skystack.night.build`; the rules are in :mod:`skystack.night.run`'s
docstring.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import ClassVar

from ..errors import SkystackError
from ..exposure import header_exptime_problem
from ..io.saturation import check_level, saturation_level
from . import masters as mst
from .calibrate import Calibration, parse_section
from .colour import colour_stack_keys
from .names import ProductNames, describe, safe_name
from .scan import FrameInfo, ScanResult
from .summary import FrameRecord

__all__ = ["BadpixJob", "CalibrationChoice", "Camera", "CameraMasters", "Job", "MasterJob",
           "NightPlan", "RawFrame", "StackJob", "calibration_choice", "plan_night"]


@dataclass(frozen=True, order=True)
class Camera:
    """What a master is made for: binning ``(xbin, ybin)``, calibrated (trimmed) shape
    ``(rows, cols)`` and, for a mosaic camera, the ``ccd`` (EXTNAME, else HDU index; ``''`` for
    a single-chip camera, and for a mosaic's stacks, which hold all its CCDs). Ordered by
    binning, then shape, then CCD."""

    binning: tuple[int, int]
    shape: tuple[int, int]
    ccd: str = ""

    @property
    def identity(self) -> tuple:
        """``(binning, shape)`` (and the CCD): the camera in product identities."""
        return (self.binning, self.shape) + ((self.ccd,) if self.ccd else ())

    @property
    def label(self) -> str:
        """``1x1 512x512`` (``1x1 512x512 CCD2``): the camera in group names."""
        return (f"{self.binning[0]}x{self.binning[1]} {self.shape[0]}x{self.shape[1]}"
                + (f" {self.ccd}" if self.ccd else ""))

    @property
    def mosaic(self) -> Camera:
        """The camera of the stacks this CCD's lights go into: all CCDs together."""
        return Camera(self.binning, self.shape)

    def suffix(self, many: bool) -> str:
        """Product-name suffix: ``_1x1_512x512`` when the night holds ``many`` cameras, then
        ``_<CCD>`` for a CCD's masters (``masters/bias_CCD2.fits``: their one naming rule)."""
        sfx = f"_{self.binning[0]}x{self.binning[1]}_{self.shape[0]}x{self.shape[1]}" \
            if many else ""
        return sfx + (f"_{safe_name(self.ccd)}" if self.ccd else "")


@dataclass(frozen=True)
class RawFrame:
    """A raw frame to calibrate: its header ``info``, its overscan and trim ``cal`` (no
    masters yet) and its ``camera``."""

    info: FrameInfo
    cal: Calibration
    camera: Camera

    @property
    def path(self) -> str:
        return self.info.path

    @property
    def name(self) -> str:
        """The file, or ``file[EXTNAME]`` for a CCD of a mosaic (its record's key)."""
        return self.info.name


@dataclass(frozen=True)
class MasterJob:
    """A master bias, dark (one exposure time) or flat (one filter) of one camera."""

    kind: str  # "bias" | "dark" | "flat"
    path: str
    frames: tuple[RawFrame, ...]
    group: str  # SKYGROUP: camera, exposure time or filter
    camera: Camera

    def product_key(self) -> dict:
        """The raw header values the master is made for (summary's ``key``)."""
        if self.kind == "flat":
            return {"filter": self.frames[0].info.filter or "none"}
        if self.kind == "dark":
            return {"exptime": round(self.frames[0].info.exptime, 6)}
        return {}


@dataclass(frozen=True)
class BadpixJob:
    """The bad-pixel mask of one camera, from its master darks and flats (no raw frame)."""

    kind: ClassVar[str] = "badpix"
    path: str
    group: str
    camera: Camera
    frames: tuple[RawFrame, ...] = ()

    def product_key(self) -> dict:
        return {}


@dataclass(frozen=True)
class StackJob:
    """The stack of one object in one filter with one camera."""

    kind: ClassVar[str] = "stack"
    path: str
    frames: tuple[RawFrame, ...]  # by DATE-OBS, then path
    group: str  # SKYGROUP: object, filter (and camera when the night has several)
    camera: Camera
    object: str
    filter: str
    channel: str | None = None  # R, G or B: a plane of debayered colour lights (night.colour)

    def product_key(self) -> dict:
        return {"object": self.object, "filter": self.filter,
                "camera": [list(self.camera.binning), list(self.camera.shape)]}


Job = MasterJob | BadpixJob | StackJob


@dataclass
class CameraMasters:
    """The master paths of one camera: ``darks`` by exposure time (s), ``flats`` by filter;
    ``failed_flats`` (filter -> reason) holds the flat groups that could not be made."""

    bias: str | None = None
    darks: dict[float, str] = field(default_factory=dict)
    flats: dict[str, str] = field(default_factory=dict)
    badpix: str | None = None
    failed_flats: dict[str, str] = field(default_factory=dict)


@dataclass
class NightPlan:
    """Everything decided before any pixel is read (see module docstring). Paths are final.

    ``object_lights[(object, camera)]`` holds the object's lights of every filter (by
    DATE-OBS, then path): they are aligned together; ``grid_refs`` the light whose grid the
    object's stacks share when aligned by WCS. ``renamed``: product path -> why it got a hash
    suffix."""

    jobs: list[Job]
    records: dict[str, FrameRecord]
    masters: dict[Camera, CameraMasters]
    object_lights: dict[tuple[str, Camera], list[RawFrame]]
    grid_refs: dict[tuple[str, Camera], RawFrame]
    preview_paths: dict[str, str]  # stack path -> its PNG
    rgb_paths: dict[tuple[str, Camera], str]  # (object, camera) -> RGB composite PNG
    calibrated_paths: dict[str, str]  # raw light -> its --save-calibrated copy
    renamed: dict[str, str]


def _tag(value: float) -> str:
    """Exposure time for file names: ``60`` for whole seconds, ``2.5`` otherwise."""
    return f"{int(round(value))}" if abs(value - round(value)) < 1e-6 else f"{value:g}"


def _pre(info: FrameInfo, overscan: str | None, trim: str | None,
         saturation: float | None = None) -> tuple[Calibration, tuple[int, int]]:
    """Overscan, trim (options first, then its BIASSEC/TRIMSEC) and saturation level (the
    option, else its SATURATE: :func:`skystack.io.saturation.saturation_level`) of a raw
    frame, and its calibrated shape."""
    shape = tuple(info.shape)
    os_text = overscan or info.header.get("BIASSEC")
    trim_text = trim or info.header.get("TRIMSEC")
    os_section = parse_section(os_text, shape, f"{info.path}: overscan section") \
        if os_text else None
    trim_section = parse_section(trim_text, shape, f"{info.path}: trim section") \
        if trim_text else None
    cal = Calibration(overscan=os_section, trim=trim_section,
                      saturation=saturation_level(info.header, info.path, saturation))
    return cal, (trim_section.shape if trim_section is not None else shape)


def _grid_light(frames: list[RawFrame]) -> RawFrame:
    """The first of an object's lights (sorted by DATE-OBS) whose pointing agrees with the
    others' (:func:`skystack.regrid.grid.agreeing_frames`); the first light when none does."""
    from ..regrid.grid import agreeing_frames

    agree = agreeing_frames([(f.info.header, f.info.shape) for f in frames])
    return next((f for f, ok in zip(frames, agree) if ok), frames[0])


def _by_date(frames) -> list[RawFrame]:
    return sorted(frames, key=lambda f: (f.info.date_obs, f.path,
                                         -1 if f.info.hdu is None else f.info.hdu))


class _Planner:
    """Builds a :class:`NightPlan`: claims names while planning, resolves them at the end."""

    def __init__(self, out: str, overscan: str | None, trim: str | None,
                 save_calibrated: bool) -> None:
        self.out = out
        self.overscan = overscan
        self.trim = trim
        self.save_calibrated = save_calibrated
        self.saturation: float | None = None  # --saturation (raw ADU), else each SATURATE
        self.names = ProductNames()
        self.records: dict[str, FrameRecord] = {}
        self.masters: dict[Camera, CameraMasters] = defaultdict(CameraMasters)
        self.object_lights: dict[tuple[str, Camera], list[RawFrame]] = defaultdict(list)
        self.grid_refs: dict[tuple[str, Camera], RawFrame] = {}
        self.preview_paths: dict[str, str] = {}
        self.rgb_paths: dict[tuple[str, Camera], str] = {}
        self.calibrated_paths: dict[str, str] = {}

    def claim(self, folder: str, stem: str, identity: tuple, ext: str = ".fits") -> str:
        return self.names.claim(os.path.join(self.out, folder), stem, ext, identity)

    def claim_calibrated(self, raw: str, ccd: str = "") -> str:
        """``calibrated/<raw name>`` (less ``.fz``/``.gz``; ``_<CCD>`` added for a CCD of a
        mosaic): ``x.fits`` and ``x.fits.fz``, or files of one name in two folders, get
        distinct names."""
        name = os.path.basename(raw)
        for ext in (".fz", ".gz"):
            name = name[: -len(ext)] if name.endswith(ext) else name
        stem, ext = os.path.splitext(name)
        if ccd:
            return self.claim("calibrated", f"{stem}_{safe_name(ccd)}",
                              ("calibrated", os.path.abspath(raw), ccd), ext)
        return self.claim("calibrated", stem, ("calibrated", os.path.abspath(raw)), ext)

    def usable_frames(self, scanned: ScanResult) -> list[RawFrame]:
        """Every classified frame whose sections and exposure time allow it to be used; the
        others (and the files scan skipped) get their record with the reason."""
        for s in scanned.skipped:
            self.records[s.path] = FrameRecord(s.path, "unknown", reason=s.reason)
        frames = []
        for info in scanned.frames:
            rec = FrameRecord(info.name, info.role)
            self.records[info.name] = rec
            try:
                cal, shape = _pre(info, self.overscan, self.trim, self.saturation)
            except SkystackError as exc:
                rec.reason = str(exc)
                continue
            if info.role in ("dark", "light") and header_exptime_problem(info.header):
                rec.reason = f"{header_exptime_problem(info.header)}: skipped"
                continue
            frames.append(RawFrame(info, cal, Camera(tuple(info.binning), shape, info.ccd)))
        return frames

    def camera_jobs(self, cam: Camera, mine: dict[str, list[RawFrame]], many: bool) -> list:
        """The master jobs of one camera (of one CCD of a mosaic; ``mine``: its frames by
        role), in build order."""
        sfx = cam.suffix(many)
        cm = self.masters[cam]
        jobs: list = []
        if mine.get("bias"):
            cm.bias = self.claim("masters", f"bias{sfx}", ("bias", cam.identity))
            jobs.append(MasterJob("bias", cm.bias, tuple(mine["bias"]), cam.label, cam))
        darks_by_t: dict[float, list] = defaultdict(list)
        for f in mine.get("dark", []):
            t = f.info.exptime
            if not math.isfinite(t) or t <= 0:
                self.records[f.name].reason = "dark without a positive EXPTIME"
                continue
            darks_by_t[round(t, 6)].append(f)
        for t in sorted(darks_by_t):
            path = self.claim("masters", f"dark_{_tag(t)}s{sfx}", ("dark", t, cam.identity))
            cm.darks[t] = path
            jobs.append(MasterJob("dark", path, tuple(darks_by_t[t]),
                                  f"{cam.label} {_tag(t)}s", cam))
        flats_by_f: dict[str, list] = defaultdict(list)
        for f in mine.get("flat", []):
            if cm.darks and header_exptime_problem(f.info.header):  # scales the dark
                self.records[f.name].reason = f"{header_exptime_problem(f.info.header)}: skipped"
                continue
            flats_by_f[f.info.filter or "none"].append(f)
        for filt in sorted(flats_by_f):
            path = self.claim("masters", f"flat_{safe_name(filt)}{sfx}",
                              ("flat", filt, cam.identity))
            cm.flats[filt] = path
            jobs.append(MasterJob("flat", path, tuple(flats_by_f[filt]),
                                  f"{cam.label} {filt}", cam))
        if cm.darks or cm.flats:
            cm.badpix = self.claim("masters", f"badpix{sfx}", ("badpix", cam.identity))
            jobs.append(BadpixJob(cm.badpix, cam.label, cam))
        return jobs

    def stack_jobs(self, cam: Camera, lights: list[RawFrame], many: bool) -> list[StackJob]:
        sfx = cam.suffix(many)
        by_stack: dict[tuple[str, str], list] = defaultdict(list)
        for f in lights:
            by_stack[(f.info.object or "unknown", f.info.filter or "none")].append(f)
            if self.save_calibrated:
                self.calibrated_paths[f.name] = self.claim_calibrated(f.path, f.info.ccd)
        # One grid per object for all its filters (so that colours align, e.g. in the RGB
        # composite): that of its first light of the night whose pointing agrees with the
        # object's other lights (a wrong CRVAL must not become everyone's grid).
        for f in _by_date(lights):
            self.object_lights[(f.info.object or "unknown", cam)].append(f)
        for key, frames in self.object_lights.items():
            if key[1] == cam:
                self.grid_refs[key] = _grid_light(frames)
        jobs = []
        for (obj, raw_filt) in sorted(by_stack):
            members = by_stack[(obj, raw_filt)]
            planes = colour_stack_keys(raw_filt, [f.info.header for f in members],
                                       [f.name for f in members]) or [(raw_filt, None)]
            for filt, channel in planes:  # colour lights: one stack per R, G, B plane
                stem = f"{safe_name(obj)}_{safe_name(filt)}{sfx}"
                identity = ("stack", obj, filt, cam.identity)
                path = self.claim("stacks", stem, identity)
                self.preview_paths[path] = self.claim("previews", stem, identity, ".png")
                self.rgb_paths.setdefault((obj, cam), self.claim(
                    "previews", f"{safe_name(obj)}_rgb{sfx}", ("rgb", obj, cam.identity),
                    ".png"))
                group = f"{obj} {filt}" + (f" {cam.label}" if many else "")
                jobs.append(StackJob(path, tuple(_by_date(members)), group, cam, obj, filt,
                                     channel))
        return jobs

    def finish(self, jobs: list) -> NightPlan:
        """The plan with the provisional paths of :meth:`claim` replaced by the final, unique
        ones (see :mod:`skystack.night.names`), saying which names had to be disambiguated."""
        from dataclasses import replace

        final, renamed = self.names.resolve()
        for cm in self.masters.values():
            cm.bias = final[cm.bias] if cm.bias is not None else None
            cm.badpix = final[cm.badpix] if cm.badpix is not None else None
            cm.darks = {k: final[p] for k, p in cm.darks.items()}
            cm.flats = {k: final[p] for k, p in cm.flats.items()}
        why = {}
        for r in renamed:
            why[r.path] = (f"named {os.path.basename(r.path)}: {os.path.basename(r.plain)} would "
                           f"be the same name for {describe(r.identity)} and "
                           + ", ".join(describe(o) for o in r.others))
        return NightPlan(
            jobs=[replace(job, path=final[job.path]) for job in jobs], records=self.records,
            masters=dict(self.masters), object_lights=dict(self.object_lights),
            grid_refs=self.grid_refs,
            preview_paths={final[k]: final[p] for k, p in self.preview_paths.items()},
            rgb_paths={k: final[p] for k, p in self.rgb_paths.items()},
            calibrated_paths={k: final[p] for k, p in self.calibrated_paths.items()},
            renamed=why)


def plan_night(scanned: ScanResult, out_dir: str, *, overscan: str | None = None,
               trim: str | None = None, save_calibrated: bool = False,
               saturation: float | None = None) -> NightPlan:
    """The night's jobs and decisions from its scanned headers (see module docstring).

    ``out_dir`` is where the products will be written (their paths are under it);
    ``overscan``/``trim`` (FITS sections) override each frame's BIASSEC/TRIMSEC;
    ``save_calibrated`` plans a calibrated copy of each light; ``saturation`` (raw ADU)
    overrides each frame's SATURATE (:mod:`skystack.io.saturation`). Raises a one-line
    :class:`SkystackError` when two products would get the same file name. Reads no pixel."""
    planner = _Planner(out_dir, overscan, trim, save_calibrated)
    planner.saturation = check_level(saturation)
    frames = planner.usable_frames(scanned)
    # Masters per camera (per CCD of a mosaic); stacks per mosaic camera, holding the lights
    # of all its CCDs. A single-chip camera is its own mosaic: masters, then its stacks.
    mosaics = sorted({f.camera.mosaic for f in frames})
    many = len(mosaics) > 1
    jobs: list = []
    for mosaic in mosaics:
        for cam in sorted({f.camera for f in frames if f.camera.mosaic == mosaic}):
            mine: dict[str, list[RawFrame]] = defaultdict(list)
            for f in frames:
                if f.camera == cam:
                    mine[f.info.role].append(f)
            jobs += planner.camera_jobs(cam, mine, many)
        jobs += planner.stack_jobs(mosaic, [f for f in frames if f.camera.mosaic == mosaic
                                            and f.info.role == "light"], many)
    return planner.finish(jobs)


@dataclass(frozen=True)
class CalibrationChoice:
    """The masters (paths, None when not used) that calibrate one frame for its product, the
    dark's scale, and ``used``: what the summary says about them (names, scale, notes)."""

    bias: str | None
    dark: str | None
    dark_scale: float
    flat: str | None
    badpix: str | None
    used: dict

    @property
    def paths(self) -> tuple[str | None, str | None, str | None, str | None]:
        """(bias, dark, flat, badpix)."""
        return (self.bias, self.dark, self.flat, self.badpix)


def calibration_choice(masters: CameraMasters, frame: RawFrame, role: str
                       ) -> CalibrationChoice:
    """The masters of ``frame``'s camera that calibrate it for ``role``'s product: darks and
    flats get the bias; flats and lights the dark (:func:`skystack.night.masters.choose_dark`);
    lights the flat of their filter and the bad-pixel mask."""
    info = frame.info
    used: dict = {}
    bias = dark = flat = badpix = None
    scale = 1.0
    if role in ("dark", "flat", "light") and masters.bias is not None:
        bias = masters.bias
    if role in ("flat", "light"):
        dark, scale, note = mst.choose_dark(masters.darks, info.exptime,
                                            bias_subtracted=masters.bias is not None)
        if note:
            used["dark_note"] = note
    if role == "light":
        flat = masters.flats.get(info.filter or "none")
        if flat is None:
            used["flat_note"] = mst.missing_flat_note(masters, info.filter or "none")
        badpix = masters.badpix
    for name, path in (("bias", bias), ("dark", dark), ("flat", flat), ("badpix", badpix)):
        if path is not None:
            used[name] = os.path.basename(path)
    if dark is not None:
        used["dark_scale"] = round(scale, 6)
    return CalibrationChoice(bias, dark, scale, flat, badpix, used)
