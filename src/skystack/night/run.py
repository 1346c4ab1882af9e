"""``skystack night RAW_DIR -o OUT_DIR``: masters, then one aligned stack per object and filter.

Plan (everything is decided, and every existing product checked, before any pixel is read):

1. :func:`skystack.night.scan.scan` reads every header once and classifies the frames; files
   that cannot be read or classified are reported and skipped.
2. Frames are grouped by *camera*: binning and calibrated shape (after ``TRIMSEC``). Masters are
   per camera: ``bias``, ``dark_<T>s`` per exposure time, ``flat_<FILTER>`` per filter and
   ``badpix`` (see :mod:`skystack.night.masters`). When a night holds several cameras the names
   get a ``_<bx>x<by>_<rows>x<cols>`` suffix.
3. Lights are calibrated inside the tile loop (:mod:`skystack.night.calibrate`): bias, the dark
   of the same exposure time or else the longest one scaled by exposure time, the flat of the
   light's filter, bad pixels masked. Missing masters are skipped with a note, never fatal.
   A camera without biases has darks that hold the bias level: they are never scaled, the
   dark of the closest exposure time is subtracted as it is (see
   :func:`skystack.night.masters.choose_dark`), with a note.
   Lights and darks whose EXPTIME (or EXPOSURE) is present but unusable (not a number, not
   positive, or above 1e6 s: see :mod:`skystack.exposure`), and such flats when there are
   darks to scale to them, are skipped with the reason; a frame without the keyword is kept
   (its dark cannot be matched or scaled: noted).
4. One stack per (OBJECT, FILTER, camera), reprojected and combined with outlier rejection
   (sigma clipping about the median by default; any combine option can be given). Alignment
   (``align``): by the lights' WCS onto the grid of the object's first light (by DATE-OBS)
   whose pointing agrees with its other lights' (one with a wrong CRVAL is passed over), or
   by stars (:mod:`skystack.register`): all lights of an object, every filter, are measured
   and registered on its sharpest light with the most stars, whose pixel grid all the
   object's stacks share. ``auto`` (the default) uses stars for an object where any light has
   no celestial WCS. Frame selection (``max_fwhm``, ``max_ellipticity``, ``min_stars``,
   ``best_fraction``, per object and filter) measures the stars in either mode; measurements,
   registrations and decisions go into the summary and the table.
   Lights whose WCS cannot place them (aligned by WCS) or whose footprint misses the grid are
   skipped with the reason; stacks aligned on a light without WCS get a pixel-only WCS (no sky
   coordinates: ``sky_coordinates`` false in the summary).
5. PNG previews (auto-stretch), an RGB composite for objects with three or more filters, and
   ``summary.json`` plus a printed table: every frame, its role, group, the masters used, and
   whether it was used or why not.

Re-running into the same OUT_DIR reuses every product whose recipe is unchanged (see
:mod:`skystack.night.products`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

from .._version import __version__
from ..config import NIGHT_STACK_OPTIONS, check_threads
from ..errors import SkystackError
from ..exposure import header_exptime_problem
from ..io.identity import file_identity
from ..io.inputs import Frame, load_frames
from ..io.labels import fits_label
from ..io.lock import output_lock
from ..io.reader import Tile
from ..text_table import text_table
from . import masters as mst
from .calibrate import Calibration, calibrated_frame, parse_section
from .names import ProductNames, describe, safe_name
from .products import (
    FINGERPRINT_KEY,
    atomic_path,
    fingerprint,
    input_cards,
    input_records,
    product_state,
    remove_night_leftovers,
)
from .scan import check_raw_dir

__all__ = ["run_night", "NightResult", "STACK_OPTIONS"]

STACK_OPTIONS = NIGHT_STACK_OPTIONS  # defined once, for the command line too


@dataclass
class FrameRecord:
    """One raw file's fate in the night (a row of the summary)."""

    file: str
    role: str
    group: str = ""
    masters: dict = field(default_factory=dict)
    used: bool = False
    reason: str = ""
    stars: dict = field(default_factory=dict)  # star measurements, when made
    registration: dict = field(default_factory=dict)  # when aligned by stars


@dataclass
class Product:
    """One output file of the night."""

    kind: str
    path: str
    inputs: list[str]
    status: str = "planned"  # built | reused | failed
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    key: dict = field(default_factory=dict)  # raw header values it is made for (FILTER...)


@dataclass
class NightResult:
    """What ``run_night`` did: ``products`` in build order, ``frames`` one per raw file."""

    out_dir: str
    products: list[Product]
    frames: list[FrameRecord]
    seconds: float
    backend: str

    def product(self, kind: str, name: str | None = None) -> Product | None:
        for p in self.products:
            if p.kind == kind and (name is None or os.path.basename(p.path) == name):
                return p
        return None


def _tag(value: float) -> str:
    """Exposure time for file names: ``60`` for whole seconds, ``2.5`` otherwise."""
    return f"{int(round(value))}" if abs(value - round(value)) < 1e-6 else f"{value:g}"


@dataclass
class _Camera:
    binning: tuple[int, int]
    shape: tuple[int, int]  # calibrated (trimmed)

    def suffix(self, many: bool) -> str:
        if not many:
            return ""
        return f"_{self.binning[0]}x{self.binning[1]}_{self.shape[0]}x{self.shape[1]}"


class _Night:
    """Planning and execution state of one night (see module docstring)."""

    cluster = None  # a distributed.Client when run_night(cluster=...): products run on it

    def __init__(self, raw_dir, out_dir: str, *, backend: str, overwrite: bool,
                 stack_options: dict, overscan: str | None, trim: str | None,
                 save_calibrated: bool, previews: bool, threads: int | None,
                 mem_limit, log: Callable[[str], None], align: str = "auto",
                 align_model: str = "similarity", selection: dict | None = None) -> None:
        self.raw_dir = raw_dir
        self.out = out_dir
        self.backend = backend
        self.overwrite = overwrite
        self.stack_options = {**STACK_OPTIONS, **stack_options}
        self.overscan_opt = overscan
        self.trim_opt = trim
        self.save_calibrated = save_calibrated
        self.previews = previews
        self.threads = threads
        self.mem_limit = mem_limit
        self.log = log
        self.align = align
        self.align_model = align_model
        self.selection = {k: v for k, v in (selection or {}).items() if v is not None}
        self.object_lights: dict[tuple, list] = defaultdict(list)
        self.registrations: dict[tuple, object] = {}
        self.records: dict[str, FrameRecord] = {}
        self.products: list[Product] = []
        self.master_frames: dict[str, Frame] = {}
        self.fprints: dict[str, str] = {}
        self.input_records: dict[str, list[str]] = {}  # product path -> one per input
        self.grid_refs: dict[tuple, tuple] = {}
        self.held_bytes = 0
        self.lights: dict[str, Frame] = {}
        self.wcs_cache: dict[str, object] = {}
        self.names = ProductNames()
        self.preview_paths: dict[str, str] = {}  # stack path -> its PNG
        self.rgb_paths: dict[tuple, str] = {}  # (object, camera) -> RGB composite PNG
        self.calibrated_paths: dict[str, str] = {}  # raw light -> its --save-calibrated copy
        self.renamed: dict[str, str] = {}  # product path -> why it has a hash suffix

    # -- helpers ---------------------------------------------------------------------------

    def _common(self) -> dict:
        opts = {"backend": self.backend, "threads": self.threads}
        if self.mem_limit is not None:
            opts["mem_limit"] = self.mem_limit
        if self.cluster is not None:
            opts["cluster"] = self.cluster
        return opts

    def _pre(self, info) -> tuple[Calibration, tuple[int, int]]:
        """Overscan and trim of a raw frame (options first, then its BIASSEC/TRIMSEC)."""
        shape = tuple(info.shape)
        os_text = self.overscan_opt or info.header.get("BIASSEC")
        trim_text = self.trim_opt or info.header.get("TRIMSEC")
        overscan = parse_section(os_text, shape, f"{info.path}: overscan section") \
            if os_text else None
        trim = parse_section(trim_text, shape, f"{info.path}: trim section") \
            if trim_text else None
        cal = Calibration(overscan=overscan, trim=trim)
        return cal, (trim.shape if trim is not None else shape)

    def _frame(self, info, cal: Calibration) -> Frame:
        raw = load_frames([info.path])[0]
        return calibrated_frame(raw, cal)

    def _light(self, info, cal: Calibration, cam_key) -> Frame:
        """A light calibrated for its stack, made once (alignment and stack share it)."""
        if info.path not in self.lights:
            choice = self._recipe_calibration(cam_key, info, cal, "light")[0]
            self.lights[info.path] = self._frame(info, self._calibration(cal, choice))
        return self.lights[info.path]

    def _wcs(self, frame: Frame):
        """A calibrated light's celestial WCS (cached), or the SkystackError saying why not."""
        from ..stacking import frame_wcs

        if frame.path not in self.wcs_cache:
            try:
                self.wcs_cache[frame.path] = frame_wcs(frame)
            except SkystackError as exc:
                self.wcs_cache[frame.path] = exc
        return self.wcs_cache[frame.path]

    def _held(self, master: Frame) -> Frame:
        """The master decoded into memory while the masters held fit a quarter of the memory
        budget (every light reads every master: see calibrate.InMemoryMaster)."""
        from ..config import default_mem_limit, parse_size
        from .calibrate import hold_in_memory

        budget = parse_size(self.mem_limit) if self.mem_limit is not None \
            else default_mem_limit()
        size = 4 * master.shape[0] * master.shape[1]
        if self.held_bytes + size > budget // 4:
            return master
        self.held_bytes += size
        return hold_in_memory(master)

    def _master(self, key: str) -> Frame | None:
        if key not in self.master_frames:
            return None
        return self.master_frames[key]

    # -- planning ----------------------------------------------------------------------------

    def plan(self) -> list[tuple]:
        from .scan import scan

        result = scan(self.raw_dir)
        for s in result.skipped:
            self.records[s.path] = FrameRecord(s.path, "unknown", reason=s.reason)
        infos = []
        for info in result.frames:
            rec = FrameRecord(info.path, info.role)
            self.records[info.path] = rec
            try:
                cal, shape = self._pre(info)
            except SkystackError as exc:
                rec.reason = str(exc)
                continue
            if info.role in ("dark", "light") and header_exptime_problem(info.header):
                rec.reason = f"{header_exptime_problem(info.header)}: skipped"
                continue
            infos.append((info, cal, _Camera(tuple(info.binning), shape)))
        cameras = {(c.binning, c.shape) for _, _, c in infos}
        many = len(cameras) > 1
        by_role: dict[str, list] = defaultdict(list)
        for item in infos:
            by_role[item[0].role].append(item)
        jobs: list[tuple] = []
        self.camera_masters: dict[tuple, dict] = defaultdict(lambda: {"darks": {}, "flats": {}})
        for cam_key in sorted(cameras):
            cam = _Camera(*cam_key)
            sfx = cam.suffix(many)
            mine = {role: [it for it in items if (it[2].binning, it[2].shape) == cam_key]
                    for role, items in by_role.items()}
            cm = self.camera_masters[cam_key]
            group_name = f"{cam.binning[0]}x{cam.binning[1]} {cam.shape[0]}x{cam.shape[1]}"
            biases = mine.get("bias", [])
            if biases:
                path = self._claim("masters", f"bias{sfx}", ("bias", cam_key))
                cm["bias"] = path
                jobs.append(("bias", path, biases, group_name))
            darks_by_t: dict[float, list] = defaultdict(list)
            for it in mine.get("dark", []):
                t = it[0].exptime
                if not math.isfinite(t) or t <= 0:
                    self.records[it[0].path].reason = "dark without a positive EXPTIME"
                    continue
                darks_by_t[round(t, 6)].append(it)
            for t in sorted(darks_by_t):
                path = self._claim("masters", f"dark_{_tag(t)}s{sfx}", ("dark", t, cam_key))
                cm["darks"][t] = path
                jobs.append(("dark", path, darks_by_t[t], f"{group_name} {_tag(t)}s"))
            flats_by_f: dict[str, list] = defaultdict(list)
            for it in mine.get("flat", []):
                if cm["darks"] and header_exptime_problem(it[0].header):  # scales the dark
                    self.records[it[0].path].reason = \
                        f"{header_exptime_problem(it[0].header)}: skipped"
                    continue
                flats_by_f[it[0].filter or "none"].append(it)
            for filt in sorted(flats_by_f):
                path = self._claim("masters", f"flat_{safe_name(filt)}{sfx}",
                                   ("flat", filt, cam_key))
                cm["flats"][filt] = path
                jobs.append(("flat", path, flats_by_f[filt], f"{group_name} {filt}"))
            if cm["darks"] or cm["flats"]:
                path = self._claim("masters", f"badpix{sfx}", ("badpix", cam_key))
                cm["badpix"] = path
                jobs.append(("badpix", path, [], group_name))
            lights: dict[tuple, list] = defaultdict(list)
            for it in mine.get("light", []):
                lights[(it[0].object or "unknown", it[0].filter or "none")].append(it)
                if self.save_calibrated:
                    self.calibrated_paths[it[0].path] = self._claim_calibrated(it[0].path)
            # One grid per object for all its filters (so that colours align, e.g. in the RGB
            # composite): that of its first light of the night whose pointing agrees with the
            # object's other lights (a wrong CRVAL must not become everyone's grid).
            for it in sorted(mine.get("light", []), key=lambda it: (it[0].date_obs, it[0].path)):
                self.object_lights[(it[0].object or "unknown", cam_key)].append(it)
            for key, its in self.object_lights.items():
                if key[1] == cam_key:
                    self.grid_refs[key] = _grid_light(its)
            for (obj, filt) in sorted(lights):
                items = sorted(lights[(obj, filt)], key=lambda it: (it[0].date_obs, it[0].path))
                stem = f"{safe_name(obj)}_{safe_name(filt)}{sfx}"
                path = self._claim("stacks", stem, ("stack", obj, filt, cam_key))
                self.preview_paths[path] = self._claim("previews", stem,
                                                       ("stack", obj, filt, cam_key), ".png")
                self.rgb_paths.setdefault((obj, cam_key), self._claim(
                    "previews", f"{safe_name(obj)}_rgb{sfx}", ("rgb", obj, cam_key), ".png"))
                label = f"{obj} {filt}" + (f" {group_name}" if many else "")
                jobs.append(("stack", path, items, label, cam_key, obj, filt))
        return self._final_names(jobs)

    def _claim(self, folder: str, stem: str, identity: tuple, ext: str = ".fits") -> str:
        return self.names.claim(os.path.join(self.out, folder), stem, ext, identity)

    def _claim_calibrated(self, raw: str) -> str:
        """``calibrated/<raw name>`` (less ``.fz``/``.gz``): ``x.fits`` and ``x.fits.fz``, or
        files of one name in two folders, get distinct names."""
        name = os.path.basename(raw)
        for ext in (".fz", ".gz"):
            name = name[: -len(ext)] if name.endswith(ext) else name
        stem, ext = os.path.splitext(name)
        return self._claim("calibrated", stem, ("calibrated", os.path.abspath(raw)), ext)

    def _final_names(self, jobs: list[tuple]) -> list[tuple]:
        """Replace the provisional paths of :meth:`_claim` by the final, unique ones (see
        :mod:`skystack.night.names`), and say which names had to be disambiguated."""
        final, renamed = self.names.resolve()
        for cm in self.camera_masters.values():
            for key in ("bias", "badpix"):
                if key in cm:
                    cm[key] = final[cm[key]]
            for key in ("darks", "flats"):
                cm[key] = {k: final[p] for k, p in cm[key].items()}
        self.preview_paths = {final[k]: final[p] for k, p in self.preview_paths.items()}
        self.rgb_paths = {k: final[p] for k, p in self.rgb_paths.items()}
        self.calibrated_paths = {k: final[p] for k, p in self.calibrated_paths.items()}
        for r in renamed:
            why = (f"named {os.path.basename(r.path)}: {os.path.basename(r.plain)} would be the "
                   f"same name for {describe(r.identity)} and "
                   + ", ".join(describe(o) for o in r.others))
            self.renamed[r.path] = why
            self.log(f"names   {why}")
        return [(job[0], final[job[1]], *job[2:]) for job in jobs]

    # -- calibration choices -------------------------------------------------------------------

    def _dark_for(self, cam_key, exptime: float) -> tuple[str | None, float, str]:
        """(master dark path, scale, note) for a frame of ``exptime`` seconds."""
        cm = self.camera_masters[cam_key]
        return mst.choose_dark(cm["darks"], exptime, bias_subtracted="bias" in cm)

    def _recipe_calibration(self, cam_key, info, cal: Calibration, role: str) -> tuple:
        """The calibration of one frame for ``role``'s product, and its recipe for the
        fingerprint (master fingerprints + scale)."""
        cm = self.camera_masters[cam_key]
        used: dict = {}
        bias = dark = flat = badpix = None
        scale = 1.0
        if role in ("dark", "flat", "light") and "bias" in cm:
            bias = cm["bias"]
        if role in ("flat", "light"):
            dark, scale, note = self._dark_for(cam_key, info.exptime)
            if note:
                used["dark_note"] = note
        if role == "light":
            flat = cm["flats"].get(info.filter or "none")
            if flat is None:
                used["flat_note"] = mst.missing_flat_note(cm, info.filter or "none")
            badpix = cm.get("badpix")
        for name, path in (("bias", bias), ("dark", dark), ("flat", flat), ("badpix", badpix)):
            if path is not None:
                used[name] = os.path.basename(path)
        if dark is not None:
            used["dark_scale"] = round(scale, 6)
        recipe = [self.fprints.get(p) for p in (bias, dark, flat, badpix)] + [
            round(scale, 9), cal.describe()]
        return (bias, dark, scale, flat, badpix), used, recipe

    def _calibration(self, cal: Calibration, choice) -> Calibration:
        bias, dark, scale, flat, badpix = choice
        return Calibration(overscan=cal.overscan, trim=cal.trim, bias=self._master(bias),
                           dark=self._master(dark), dark_scale=scale, flat=self._master(flat),
                           badpix=self._master(badpix))

    # -- execution -----------------------------------------------------------------------------

    def fingerprints(self, jobs) -> list[tuple]:
        """Each job with its fingerprint and state; raises before any work on a stale product."""
        planned = []
        for job in jobs:
            kind, path, items = job[0], job[1], job[2]
            if kind == "badpix":
                cam_key = next(k for k, cm in self.camera_masters.items()
                               if cm.get("badpix") == path)
                cm = self.camera_masters[cam_key]
                deps = [self.fprints[p] for p in [*cm["darks"].values(), *cm["flats"].values()]]
                fp = fingerprint(kind, [], {}, deps)
            else:
                cam_key = (items[0][2].binning, items[0][2].shape)
                recipes = [self._recipe_calibration(cam_key, it[0], it[1], kind)[2]
                           for it in items]
                options = {"bias": mst.BIAS_OPTIONS, "dark": mst.DARK_OPTIONS,
                           "flat": mst.FLAT_OPTIONS, "stack": self.stack_options}[kind]
                recipe = {"options": options, "calibration": recipes}
                if kind == "stack":
                    recipe["grid"] = os.path.abspath(self.grid_refs[(job[5], cam_key)][0].path)
                    recipe["align"] = {"mode": self.align, "model": self.align_model,
                                       "selection": self.selection}
                    if self.align != "wcs":  # the star reference is chosen among all of them
                        recipe["object_lights"] = [
                            it[0].path for it in self.object_lights[(job[5], cam_key)]]
                inputs = [it[0].path for it in items]
                identities = [file_identity(p) for p in inputs]
                fp = fingerprint(kind, inputs, recipe, identities=identities)
                self.input_records[path] = input_records(identities)
            self.fprints[path] = fp
            planned.append((job, fp, product_state(path, fp, self.overwrite,
                                                   self.input_records.get(path, ()),
                                                   [it[0].path for it in items])))
        return planned

    def execute(self, planned) -> None:
        os.makedirs(os.path.join(self.out, "masters"), exist_ok=True)
        os.makedirs(os.path.join(self.out, "stacks"), exist_ok=True)
        for job, fp, state in planned:
            kind, path, items = job[0], job[1], job[2]
            product = Product(kind, path, [it[0].path for it in items], key=_product_key(job))
            if path in self.renamed:
                product.notes.append(self.renamed[path])
            self.products.append(product)
            t0 = time.perf_counter()
            header = fits.Header()
            header[FINGERPRINT_KEY] = (fp, "skystack night: recipe fingerprint")
            header.extend(input_cards(self.input_records.get(path, ()), product.inputs))
            if kind == "stack":
                ok = self._stack(job, product, header, state)
            else:
                ok = self._build_master(job, product, header, state)
            product.seconds = time.perf_counter() - t0
            if ok and kind != "stack" and os.path.exists(path):
                self.master_frames[path] = self._held(load_frames([path])[0])
            if ok:
                self.log(f"{kind:<7} {product.status:<7} {os.path.relpath(path, self.out):<34}"
                         f"{len(items):4d} frames  {product.seconds:6.2f} s"
                         + (f"  ({'; '.join(product.notes)})" if product.notes else ""))

    def _frames_for(self, kind, items, cam_key, product: Product) -> list[tuple]:
        """(raw record, calibrated frame) for each frame that can be opened."""
        frames = []
        for info, cal, _ in items:
            rec = self.records[info.path]
            choice, used, _ = self._recipe_calibration(cam_key, info, cal, kind)
            rec.group = product.path and os.path.relpath(product.path, self.out)
            rec.masters = used
            try:
                frames.append((rec, self._light(info, cal, cam_key) if kind == "light"
                               else self._frame(info, self._calibration(cal, choice))))
            except SkystackError as exc:
                rec.reason = str(exc)
        return frames

    def _build_master(self, job, product: Product, header: fits.Header, state: str) -> bool:
        kind, path, items, group = job[0], job[1], job[2], job[3]
        if kind == "badpix":
            return self._build_badpix(path, product, header, state)
        cam_key = (items[0][2].binning, items[0][2].shape)
        if state == "reuse":
            product.status = "reused"
            for info, cal, _ in items:
                rec = self.records[info.path]
                rec.group = os.path.relpath(path, self.out)
                rec.masters = self._recipe_calibration(cam_key, info, cal, kind)[1]
                rec.used = True
            return True
        pairs = self._frames_for(kind, items, cam_key, product)
        if not pairs:
            product.status = "failed"
            product.notes.append("no usable frames")
            return False
        frames = [f for _, f in pairs]
        options = {"bias": mst.BIAS_OPTIONS, "dark": mst.DARK_OPTIONS,
                   "flat": mst.FLAT_OPTIONS}[kind]
        header["IMAGETYP"] = (f"MASTER {kind.upper()}", "skystack night master frame")
        header["SKYGROUP"] = (group, "camera / exposure / filter group")
        tmp = path
        try:
            with atomic_path(path, overwrite=True, stable=self.cluster is not None) as tmp:
                from ..api import combine_to_file

                combine_to_file(frames, tmp, extra_header=header, **options, **self._common())
                if kind == "flat":
                    level = mst.normalise_flat(tmp, label=path)
                    product.notes.append(f"median level {level:.1f} ADU")
        except SkystackError as exc:
            if kind != "flat":
                raise
            # One unusable flat group (no signal, all NaN) must not stop the night.
            mst.skip_flat_group(self.camera_masters[cam_key], path, product, pairs,
                                str(exc).replace(tmp, path), self.log)
            return False
        for rec, _ in pairs:
            rec.used = True
        product.status = "built"
        return True

    def _build_badpix(self, path: str, product: Product, header: fits.Header,
                      state: str) -> bool:
        cam_key = next(k for k, cm in self.camera_masters.items() if cm.get("badpix") == path)
        cm = self.camera_masters[cam_key]
        if state == "reuse":
            product.status = "reused"
            return True
        dark = None
        dark_t = math.nan
        if cm["darks"]:
            dark_t = max(cm["darks"])
            dark = self._master(cm["darks"][dark_t])
        flats = [self._master(p) for p in cm["flats"].values()]
        flats = [f for f in flats if f is not None]
        if dark is None and not flats:
            product.status = "failed"
            product.notes.append("no master dark or flat")
            return False
        mask, counts = mst.badpix_mask(cam_key[1], dark, dark_t, flats)
        header["IMAGETYP"] = ("MASTER BADPIX", "skystack night bad-pixel mask")
        header["NHOT"] = (counts["hot"], "hot pixels (from the master dark)")
        header["NLOWRESP"] = (counts["low"], "dead or low-response pixels (from the flats)")
        with atomic_path(path, overwrite=True) as tmp:
            mst.write_badpix(tmp, mask, header)
        product.status = "built"
        product.notes.append(f"{counts['hot']} hot, {counts['low']} low-response pixels")
        return True

    def _stack(self, job, product: Product, header: fits.Header, state: str) -> bool:
        from ..api_reproject import stack_to_file
        from ..register.plan import registration_grid
        from ..stacking import Grid

        _, path, items, group, cam_key, obj, filt = job
        if state == "reuse":
            product.status = "reused"
            for info, cal, _ in items:
                rec = self.records[info.path]
                rec.group = os.path.relpath(path, self.out)
                rec.masters = self._recipe_calibration(cam_key, info, cal, "light")[1]
                rec.used = True
            return True
        pairs = self._frames_for("light", items, cam_key, product)
        reg = self._registration(obj, cam_key)
        if reg is None:
            usable, wcs_list, used_records = self._by_wcs(pairs)
        else:
            usable, wcs_list, used_records = self._by_stars(pairs, reg)
        if usable and self.selection:
            usable, wcs_list, used_records = self._select(usable, wcs_list, used_records, reg)
        if not usable:
            product.status = "failed"
            product.notes.append("no light frame could be aligned" if reg is not None or
                                 not pairs else "no light frame with a celestial WCS")
            return False
        if reg is not None:
            ref = reg["reference"]
            grid = registration_grid(reg["result"])
            header["ALIGN"] = ("stars", "frames registered on GRIDREF by their stars")
            header["REGMODEL"] = (self.align_model, "registration model")
        else:
            header["ALIGN"] = ("wcs", "frames aligned by their WCS")
            ref_info, ref_cal, _ = self.grid_refs[(obj, cam_key)]
            try:
                ref = self._light(ref_info, ref_cal, cam_key)
                wcs = self._wcs(ref)
                if isinstance(wcs, SkystackError):
                    raise wcs
                grid = Grid(wcs, ref.shape)
            except SkystackError:  # the object's first light has no usable WCS: this group's
                ref, grid = usable[0], Grid(wcs_list[0], usable[0].shape)
        usable, wcs_list, used_records = _on_grid(usable, wcs_list, used_records, grid)
        if not usable:
            product.status = "failed"
            product.notes.append("no light frame overlaps the grid of "
                                 f"{os.path.basename(ref.path or ref.label)}")
            return False
        n_skipped = len(items) - len(usable)
        if n_skipped:
            product.notes.append(f"{n_skipped} light{'s' * (n_skipped != 1)} skipped")
        header["SKYGROUP"] = (group, "object / filter group")
        header["GRIDREF"] = (fits_label(os.path.basename(ref.path or ref.label)),
                             "grid: WCS and shape of this light")
        with atomic_path(path, overwrite=True, stable=self.cluster is not None) as tmp:
            stack_to_file(usable, tmp, grid=grid, extra_header=header, overwrite=True,
                          wcs_list=wcs_list, **self.stack_options, **self._common())
        for rec in used_records:
            rec.used = True
        if self.save_calibrated:
            self._save_calibrated(usable)
        product.status = "built"
        return True

    # -- alignment and selection ---------------------------------------------------------------

    def _by_wcs(self, pairs) -> tuple[list, list, list]:
        usable, wcs_list, used_records = [], [], []
        for rec, f in pairs:
            wcs = self._wcs(f)
            if isinstance(wcs, SkystackError):
                rec.reason = f"{wcs} (no alignment possible without a WCS)"
                continue
            wcs_list.append(wcs)
            usable.append(f)
            used_records.append(rec)
        return usable, wcs_list, used_records

    def _registration(self, obj: str, cam_key) -> dict | None:
        """Star registration of all lights of an object (every filter), made once; None when
        the object is aligned by WCS (``align`` wcs, or auto with every light's WCS)."""
        key = (obj, cam_key)
        if key in self.registrations:
            return self.registrations[key]
        from ..register import register_frames

        lights = []
        for info, cal, _ in self.object_lights[key]:
            try:
                lights.append(self._light(info, cal, cam_key))
            except SkystackError:
                continue  # reported by its stack's _frames_for
        mode = self.align
        if mode == "auto":
            mode = "wcs" if all(not isinstance(self._wcs(f), SkystackError) for f in lights) \
                else "stars"
        reg = None
        if mode == "stars" and lights:
            t0 = time.perf_counter()
            result = register_frames(lights, model=self.align_model, threads=self.threads)
            ref = lights[result.reference_index] if result.reference_index is not None \
                else lights[0]
            by_path = {os.path.abspath(f.path): k for k, f in enumerate(lights)}
            reg = {"result": result, "reference": ref, "by_path": by_path}
            self.log(f"align   stars   {obj}: {len(lights)} lights measured and registered on "
                     f"{os.path.basename(ref.path)} ({result.reference_reason}) "
                     f"{time.perf_counter() - t0:6.2f} s")
        self.registrations[key] = reg
        return reg

    def _by_stars(self, pairs, reg: dict) -> tuple[list, list, list]:
        result = reg["result"]
        usable, wcs_list, used_records = [], [], []
        for rec, f in pairs:
            k = reg["by_path"].get(os.path.abspath(f.path))
            if k is None:
                rec.reason = "not measured (could not be read for registration)"
                continue
            rec.stars = _measurement_dict(result.measurements[k])
            r = result.registrations[k]
            rec.registration = _registration_dict(r, k == result.reference_index)
            if not r.ok:
                rec.reason = f"not registered: {r.reason}"
                continue
            usable.append(f)
            wcs_list.append(result.wcs[k])
            used_records.append(rec)
        return usable, wcs_list, used_records

    def _select(self, usable, wcs_list, used_records, reg) -> tuple[list, list, list]:
        """Frame selection within one stack's frames (their stars measured if not yet)."""
        from ..register import measure_frames, select_frames

        if reg is not None:
            result = reg["result"]
            meas = [result.measurements[reg["by_path"][os.path.abspath(f.path)]]
                    for f in usable]
        else:
            meas = measure_frames(usable, threads=self.threads)
            for rec, m in zip(used_records, meas):
                rec.stars = _measurement_dict(m)
        decisions = select_frames(meas, **self.selection)
        keep = [k for k, d in enumerate(decisions) if d.keep]
        for rec, d in zip(used_records, decisions):
            if not d.keep:
                rec.reason = f"not selected: {d.reason}"
        return ([usable[k] for k in keep], [wcs_list[k] for k in keep],
                [used_records[k] for k in keep])

    def _save_calibrated(self, frames: list[Frame]) -> None:
        folder = os.path.join(self.out, "calibrated")
        os.makedirs(folder, exist_ok=True)
        for f in frames:
            data = np.empty(f.shape, np.float32)
            f.source.read(Tile(0, f.shape[0], 0, f.shape[1]), data)
            target = self.calibrated_paths[f.path]
            with atomic_path(target, overwrite=True) as tmp:
                fits.PrimaryHDU(data, header=f.header).writeto(tmp)

    # -- previews and summary ------------------------------------------------------------------

    def write_previews(self) -> None:
        if not self.previews:
            return
        from .preview import filter_order_for_rgb, write_preview, write_rgb

        folder = os.path.join(self.out, "previews")
        os.makedirs(folder, exist_ok=True)
        # By the raw OBJECT and FILTER the stack was planned for (and its camera): never by a
        # file name, which may be shared by other header values.
        by_object: dict[tuple, dict[str, str]] = defaultdict(dict)
        for p in self.products:
            if p.kind != "stack" or p.status not in ("built", "reused"):
                continue
            image = fits.getdata(p.path)
            write_preview(image, self.preview_paths[p.path])
            cam = tuple(tuple(c) for c in p.key["camera"])
            by_object[(p.key["object"], cam)][p.key["filter"]] = p.path
        for (obj, cam), paths in by_object.items():
            order = filter_order_for_rgb(list(paths))
            if order is None:
                continue
            try:
                channels = [fits.getdata(paths[f]) for f in order]
                write_rgb(*channels, self.rgb_paths[(obj, cam)])
            except SkystackError as exc:
                self.log(f"no RGB composite for {obj}: {exc}")

    def summary(self, seconds: float) -> NightResult:
        frames = sorted(self.records.values(), key=lambda r: r.file)
        for r in frames:
            if not r.used and not r.reason:
                r.reason = "not used (no product needed it)"
        result = NightResult(self.out, self.products, frames, seconds, self.backend)
        doc = {
            "skystack": __version__, "raw": str(self.raw_dir), "out": self.out,
            "backend": self.backend, "seconds": round(seconds, 3),
            "stack_options": self.stack_options,
            "products": [{"kind": p.kind, "path": os.path.relpath(p.path, self.out),
                          "key": p.key, "inputs": p.inputs,
                          "status": p.status, "frames": len(p.inputs),
                          "seconds": round(p.seconds, 3), "notes": p.notes}
                         for p in self.products],
            "align": {"mode": self.align, "model": self.align_model,
                      "selection": self.selection,
                      "objects": {obj: {"mode": "stars" if reg is not None else "wcs",
                                        "sky_coordinates": reg is None or reg["result"].has_sky,
                                        **({"reference": reg["reference"].path,
                                            "why": reg["result"].reference_reason}
                                           if reg is not None else {})}
                                  for (obj, _), reg in self.registrations.items()}},
            "frames": [{"file": r.file, "role": r.role, "group": r.group, "masters": r.masters,
                        "used": r.used, "reason": r.reason,
                        **({"stars": r.stars} if r.stars else {}),
                        **({"registration": r.registration} if r.registration else {})}
                       for r in frames],
        }
        with atomic_path(os.path.join(self.out, "summary.json"), overwrite=True) as tmp:
            with open(tmp, "w") as fh:
                json.dump(doc, fh, indent=1)
        return result


def _grid_light(items: list) -> tuple:
    """The first of an object's lights (sorted by DATE-OBS) whose pointing agrees with the
    others' (:func:`skystack.regrid.grid.agreeing_frames`); the first light when none does."""
    from ..regrid.grid import agreeing_frames

    agree = agreeing_frames([(it[0].header, it[0].shape) for it in items])
    return next((it for it, ok in zip(items, agree) if ok), items[0])


def _product_key(job: tuple) -> dict:
    """The raw header values a planned product is made for (summary's ``key``)."""
    kind, items = job[0], job[2]
    if kind == "stack":
        return {"object": job[5], "filter": job[6], "camera": [list(c) for c in job[4]]}
    key: dict = {}
    if kind == "flat":
        key["filter"] = items[0][0].filter or "none"
    elif kind == "dark":
        key["exptime"] = round(items[0][0].exptime, 6)
    return key


def _on_grid(usable: list, wcs_list: list, used_records: list, grid) -> tuple[list, list, list]:
    """The lights whose footprint overlaps the stack's grid; the others get their reason (they
    would contribute no pixel, and must not be counted as used)."""
    from ..register.plan import OFF_GRID
    from ..stacking import frames_off_grid

    off = set(frames_off_grid(wcs_list, [f.shape for f in usable], grid))
    for k in off:
        used_records[k].reason = f"{OFF_GRID} (GRIDREF)"
    keep = [k for k in range(len(usable)) if k not in off]
    return ([usable[k] for k in keep], [wcs_list[k] for k in keep],
            [used_records[k] for k in keep])


def _finite(value: float, digits: int) -> float | None:
    return round(float(value), digits) if math.isfinite(value) else None


def _measurement_dict(m) -> dict:
    """A frame's star measurement for the summary (pixels, ADU)."""
    return {"n_stars": int(m.n_stars), "fwhm_px": _finite(m.fwhm, 3),
            "ellipticity": _finite(m.ellipticity, 3), "background": _finite(m.background, 2),
            "background_rms": _finite(m.background_rms, 3)}


def _registration_dict(r, is_reference: bool) -> dict:
    """A frame's registration for the summary: status, fit quality, shift/rotation/scale."""
    d = {"status": "reference" if is_reference else r.status, "model": r.model,
         "n_matched": int(r.n_matched), "rms_px": _finite(r.rms, 4),
         "max_residual_px": _finite(r.max_residual, 4)}
    if r.reason and not is_reference:
        d["reason"] = r.reason
    if r.ok and r.transform is not None:
        for key, value in r.transform.describe().items():
            if isinstance(value, float):
                d[key] = _finite(value, 5)
    return d


def _calibration_text(masters: dict) -> str:
    """``bias + dark_60s x1.5 + flat_V + badpix`` (and notes such as ``no flat for filter R``)."""
    parts = []
    for key in ("bias", "dark", "flat", "badpix"):
        name = masters.get(key)
        if name is None:
            continue
        name = os.path.splitext(name)[0]
        if key == "dark" and masters.get("dark_scale", 1.0) != 1.0:
            name += f" x{masters['dark_scale']:.4g}"
        parts.append(name)
    # A scaled dark's note repeats its "x1.5"; an unscaled dark with a note (no bias) does not.
    shown = "dark" in masters and masters.get("dark_scale", 1.0) == 1.0
    parts += [v for k, v in masters.items() if k.endswith("_note") and (k != "dark_note"
                                                                         or shown)]
    return " + ".join(parts)


def format_night_table(result: NightResult) -> str:
    """The printed table: one line per raw file (file, role, product, calibration, stars and
    FWHM when measured, status)."""
    measured = any(r.stars for r in result.frames)
    rows = [("file", "role", "product", "calibration")
            + (("stars", "FWHM") if measured else ()) + ("status",)]
    for r in result.frames:
        status = "used" if r.used else f"skipped: {r.reason}"
        row = (os.path.basename(r.file), r.role, r.group, _calibration_text(r.masters))
        if measured:
            fwhm = r.stars.get("fwhm_px") if r.stars else None
            row += (str(r.stars["n_stars"]) if r.stars else "",
                    f"{fwhm:.2f}" if fwhm is not None else "")
        rows.append(row + (status,))
    return "\n".join(text_table(rows[0], rows[1:], free_last=True))


def run_night(raw_dir, out_dir: str | os.PathLike, *, backend: str = "auto",
              overwrite: bool = False, overscan: str | None = None, trim: str | None = None,
              save_calibrated: bool = False, previews: bool = True,
              threads: int | None = None, mem_limit=None,
              log: Callable[[str], None] | None = None, cluster=None,
              align: str = "auto", align_model: str = "similarity",
              max_fwhm: float | None = None, max_ellipticity: float | None = None,
              min_stars: int | None = None, best_fraction: float | None = None,
              **stack_options) -> NightResult:
    """Reduce a night of raw frames (see module docstring).

    Parameters
    ----------
    raw_dir
        A directory of FITS files (or a list of paths/globs).
    out_dir
        Created if missing; receives ``masters/``, ``stacks/``, ``previews/`` and
        ``summary.json``.
    backend, threads, mem_limit
        As for :func:`skystack.combine`; one backend for every product.
    overwrite
        Rebuild products that exist with another recipe (otherwise such a product stops the
        night before any work); products with the same recipe are always reused.
    overscan, trim
        FITS sections ``[x1:x2,y1:y2]`` overriding the headers' ``BIASSEC`` / ``TRIMSEC``.
    save_calibrated
        Also write each calibrated light (float32 ADU) to ``out_dir/calibrated/``.
    previews
        Write PNG previews and RGB composites.
    align, align_model
        ``"auto"`` (default): per object, the lights' WCS when every light of the object has a
        celestial one, else their stars; ``"wcs"``; ``"stars"`` (see module docstring).
        ``align_model``: the transform fitted per frame (:data:`skystack.register.MODELS`).
    max_fwhm, max_ellipticity, min_stars, best_fraction
        Frame selection per stack (median stellar FWHM in pixels, median ellipticity
        1 - b/a, number of stars, sharpest fraction kept); None: no selection.
    cluster
        Run every master and stack on Dask workers (a ``distributed.Client``, a scheduler
        address or a number of local workers, as for :func:`skystack.combine_to_file`): one
        task graph per product, masters first; OUT_DIR must be on storage the workers see.
    **stack_options
        Combine options for the stacks (default :data:`STACK_OPTIONS`).
    """
    from ..api import combine_options

    t0 = time.perf_counter()
    out = os.fspath(out_dir)
    if os.path.exists(out) and not os.path.isdir(out):
        raise SkystackError(f"{out}: exists and is not a directory")
    check_raw_dir(raw_dir)
    check_threads(threads)
    combine_options(**{**STACK_OPTIONS, **stack_options})  # validate before any work
    from ..register import MODELS
    from ..register.align import select_frames

    if align not in ("auto", "wcs", "stars"):
        raise SkystackError(f"invalid --align {align!r}: choose from auto, wcs, stars")
    if align_model not in MODELS:
        raise SkystackError(f"invalid --align-model {align_model!r}: choose from "
                            f"{', '.join(MODELS)}")
    selection = dict(max_fwhm=max_fwhm, max_ellipticity=max_ellipticity, min_stars=min_stars,
                     best_fraction=best_fraction)
    select_frames([], **selection)  # validates the thresholds
    created = not os.path.isdir(out)
    os.makedirs(out, exist_ok=True)
    try:
        with output_lock(out):  # one night at a time in OUT_DIR
            return _run_locked(raw_dir, out, t0, cluster, dict(
                backend=backend, overwrite=overwrite, stack_options=stack_options,
                overscan=overscan, trim=trim, save_calibrated=save_calibrated,
                previews=previews, threads=threads, mem_limit=mem_limit,
                log=log or (lambda s: None), align=align, align_model=align_model,
                selection=selection))
    except SkystackError:
        if created:  # refused before writing anything: leave no empty OUT_DIR behind
            with contextlib.suppress(OSError):
                os.rmdir(out)
        raise


def _run_locked(raw_dir, out: str, t0: float, cluster, options: dict) -> NightResult:
    """The night, holding OUT_DIR's lock: plan, remove what a killed run left, build."""
    night = _Night(raw_dir, out, **options)
    jobs = night.plan()
    if not jobs:
        raise SkystackError(f"{raw_dir}: no usable bias, dark, flat or light frames found")
    remove_night_leftovers(out, [job[1] for job in jobs] if cluster is not None else ())
    planned = night.fingerprints(jobs)
    if cluster is None:
        night.execute(planned)
    else:
        from ..cluster.connect import cluster_client

        with cluster_client(cluster) as client:  # one connection (or local cluster) for all
            night.cluster = client
            night.execute(planned)
    night.write_previews()
    return night.summary(time.perf_counter() - t0)

