"""Building a planned night: fingerprints, masters, the bad-pixel mask, stacks, previews.

:class:`NightBuild` holds what building needs across products: the plan
(:class:`skystack.night.plan.NightPlan`), each product's fingerprint, the masters already
made (decoded in memory while they fit a quarter of the memory budget), the calibrated
lights (made once: alignment and stack share them) and the products in build order. Masters
are built here; stacks in :mod:`skystack.night.stacks`. Every product is sent to the combine
engine (``combine_to_file``/``stack_to_file``, on a Dask cluster when :attr:`cluster` is set)
and written to a temporary file renamed into place.
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np
from astropy.io import fits

from ..cosmetics.interpolate import cfa_step
from ..errors import SkystackError
from ..io.identity import file_identity
from ..io.inputs import Frame, load_frames
from ..io.reader import Tile
from . import masters as mst
from .calibrate import Calibration, calibrated_frame
from .colour import NIGHT_DEBAYER
from .plan import BadpixJob, CalibrationChoice, Camera, NightPlan, RawFrame, calibration_choice
from .products import (
    FINGERPRINT_KEY,
    atomic_path,
    fingerprint,
    input_cards,
    input_records,
    product_state,
)
from .summary import Product

__all__ = ["NightBuild"]

MASTER_OPTIONS = {"bias": mst.BIAS_OPTIONS, "dark": mst.DARK_OPTIONS, "flat": mst.FLAT_OPTIONS}


class NightBuild:
    """Builds the jobs of a :class:`~skystack.night.plan.NightPlan` (see module docstring)."""

    cluster = None  # a distributed.Client when run_night(cluster=...): products run on it
    cosmetic = "mask"  # run_night(cosmetic=...): the lights' bad pixels NaN or interpolated
    show_progress = False  # run_night(progress=True): NightProgress on a terminal
    debayer = NIGHT_DEBAYER  # run_night(debayer=...): colour lights' demosaicing
    stack_history: tuple = ()  # HISTORY lines of every stack (night.options)

    def __init__(self, plan: NightPlan, out_dir: str, *, backend: str, overwrite: bool,
                 stack_options: dict, save_calibrated: bool, threads: int | None, mem_limit,
                 log: Callable[[str], None], align: str, align_model: str,
                 selection: dict, gain_normalise: bool = False) -> None:
        self.plan = plan
        self.out = out_dir
        self.backend = backend
        self.overwrite = overwrite
        self.stack_options = stack_options
        self.save_calibrated = save_calibrated
        self.threads = threads
        self.mem_limit = mem_limit
        self.log = log
        self.align = align
        self.align_model = align_model
        self.selection = selection
        self.gain_normalise = gain_normalise  # lights in electrons (calibrate.Calibration.gain)
        self.records = plan.records
        self.products: list[Product] = []
        self.master_frames: dict[str, Frame] = {}
        self.fprints: dict[str, str] = {}
        self.input_records: dict[str, list[str]] = {}  # product path -> one per input
        self.held_bytes = 0
        self.lights: dict[str, Frame] = {}
        self.flat_scales: dict[tuple, float] = {}  # (mosaic camera, flat path) -> flat_scale
        self.alignments: dict[tuple[str, Camera], object] = {}  # (object, camera) -> Alignment

    # -- helpers ---------------------------------------------------------------------------

    def common(self) -> dict:
        """The engine options of every product (backend, threads, memory, cluster)."""
        opts = {"backend": self.backend, "threads": self.threads}
        if self.mem_limit is not None:
            opts["mem_limit"] = self.mem_limit
        if self.cluster is not None:
            opts["cluster"] = self.cluster
        return opts

    def choice(self, frame: RawFrame, role: str) -> CalibrationChoice:
        """The masters that calibrate ``frame`` for ``role``'s product."""
        return calibration_choice(self.plan.masters[frame.camera], frame, role)

    def _recipe(self, frame: RawFrame, role: str) -> list:
        """The calibration of one frame in its product's fingerprint: the masters'
        fingerprints, the dark's scale and the overscan/trim."""
        choice = self.choice(frame, role)
        recipe = [self.fprints.get(p) for p in choice.paths] + [round(choice.dark_scale, 9),
                                                                 frame.cal.describe()]
        if frame.info.hdu is not None:  # a CCD of a mosaic file
            recipe.append(frame.info.hdu)
        if self.gain_normalise and role == "light":
            recipe.append("gain-normalised")
        if self.cosmetic != "mask" and role == "light" and choice.badpix is not None:
            recipe.append(f"cosmetic {self.cosmetic}")
        if frame.info.hdu is not None and role == "light" and choice.flat is not None:
            recipe.append("mosaic flat level")  # a function of every CCD's flat (flat_scale)
        return recipe

    def _calibration(self, cal: Calibration, choice: CalibrationChoice,
                     gain: float | None = None, flat_scale: float = 1.0) -> Calibration:
        return Calibration(overscan=cal.overscan, trim=cal.trim,
                           bias=self.master_frames.get(choice.bias),
                           dark=self.master_frames.get(choice.dark),
                           dark_scale=choice.dark_scale,
                           flat=self.master_frames.get(choice.flat),
                           badpix=self.master_frames.get(choice.badpix), gain=gain,
                           flat_scale=flat_scale, saturation=cal.saturation)

    def flat_scale(self, frame: RawFrame, flat_path: str | None) -> float:
        """The level of a mosaic CCD's flat relative to its mosaic's, in electrons.

        Each CCD's master flat is normalised to its own median (a relative response of median
        1), which would erase the CCDs' different quantum efficiencies; all CCDs see the same
        lamp, so the level of each flat in electrons (FLATNORM x GAIN) over the median of those
        levels across the mosaic's CCDs in that filter restores it: a light divided by its
        flat and by this factor is on one photometric scale across CCDs (in electrons with
        ``--gain-normalise``). 1 for a single-chip camera, and for every CCD when one of them
        lacks a GAIN or a normalised flat (noted in the log once)."""
        if frame.info.hdu is None or flat_path is None:
            return 1.0
        key = (frame.camera.mosaic, flat_path)
        if key not in self.flat_scales:
            self._mosaic_flat_levels(frame.camera.mosaic, flat_path)
        return self.flat_scales.get(key, 1.0)

    def _mosaic_flat_levels(self, mosaic, flat_path: str) -> None:
        """Fill :attr:`flat_scales` for the flats of every CCD of ``mosaic`` in the filter of
        ``flat_path`` (see :meth:`flat_scale`)."""
        filt = next(job.frames[0].info.filter for job in self.plan.jobs
                    if job.kind == "flat" and job.path == flat_path)
        levels: dict[str, float] = {}
        for job in self.plan.jobs:
            if job.kind != "flat" or job.camera.mosaic != mosaic \
                    or job.frames[0].info.filter != filt:
                continue
            master = self.master_frames.get(job.path)
            try:
                level = float(master.header["FLATNORM"]) * float(job.frames[0].info.header["GAIN"])
            except (AttributeError, KeyError, TypeError, ValueError):
                level = math.nan
            levels[job.path] = level
        values = np.array(list(levels.values()))
        if len(values) < 2 or not np.all(np.isfinite(values) & (values > 0)):
            if len(values) >= 2:
                self.log(f"flat    mosaic flats in {filt} normalised per CCD (a CCD has no GAIN "
                         "or no flat level): CCD-to-CCD quantum efficiencies are not corrected")
            self.flat_scales.update({(mosaic, p): 1.0 for p in levels})
            return
        median = float(np.median(values))
        self.flat_scales.update({(mosaic, p): v / median for p, v in levels.items()})

    def _frame(self, frame: RawFrame, choice: CalibrationChoice, gain: bool = False,
               cosmetic: str = "mask") -> Frame:
        """``frame`` (its CCD's extension for a mosaic) calibrated with ``choice``'s masters;
        ``gain``: multiplied by its GAIN (electrons); ``cosmetic``: its bad pixels NaN
        (``mask``) or interpolated (skystack.cosmetics.interpolate)."""
        from dataclasses import replace

        from .ccds import frame_gain

        raw = load_frames([frame.path], hdu=frame.info.hdu)[0]
        if frame.info.hdu is not None:  # messages name the CCD: file.fits[CCD2]
            raw = replace(raw, label=os.path.basename(frame.name))
        factor = frame_gain(raw) if gain else None
        scale = self.flat_scale(frame, choice.flat)
        cal = replace(self._calibration(frame.cal, choice, factor, scale), cosmetic=cosmetic,
                      cfa_step=cfa_step(raw.header))
        return calibrated_frame(raw, cal)

    def light(self, frame: RawFrame) -> Frame:
        """A light calibrated for its stack, made once (alignment and stack share it)."""
        if frame.name not in self.lights:
            self.lights[frame.name] = self._frame(frame, self.choice(frame, "light"),
                                                  self.gain_normalise, self.cosmetic)
        return self.lights[frame.name]

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

    # -- fingerprints and execution --------------------------------------------------------

    def fingerprints(self) -> list[tuple]:
        """(job, fingerprint, state) for each job; raises before any work on a stale
        product."""
        planned = []
        for job in self.plan.jobs:
            if isinstance(job, BadpixJob):
                cm = self.plan.masters[job.camera]
                deps = [self.fprints[p] for p in [*cm.darks.values(), *cm.flats.values()]]
                fp = fingerprint(job.kind, [], {}, deps)
            else:
                options = self.stack_options if job.kind == "stack" else MASTER_OPTIONS[job.kind]
                # A stack's lights are calibrated as "light": their masters' fingerprints are in
                # its recipe, so a master rebuilt (--overwrite) rebuilds the stacks made with it.
                role = "light" if job.kind == "stack" else job.kind
                recipe = {"options": options,
                          "calibration": [self._recipe(f, role) for f in job.frames]}
                if job.kind == "stack":
                    key = (job.object, job.camera)
                    recipe["grid"] = os.path.abspath(self.plan.grid_refs[key].path)
                    recipe["align"] = {"mode": self.align, "model": self.align_model,
                                       "selection": self.selection}
                    if self.align != "wcs":  # the star reference is chosen among all of them
                        recipe["object_lights"] = [f.path for f in self.plan.object_lights[key]]
                    if job.channel is not None and self.debayer != NIGHT_DEBAYER:
                        recipe["debayer"] = self.debayer  # default left out: old stacks fresh
                identities = [file_identity(f.path) for f in job.frames]
                fp = fingerprint(job.kind, [], recipe, identities=identities)
                self.input_records[job.path] = input_records(identities)
            self.fprints[job.path] = fp
            planned.append((job, fp, product_state(job.path, fp, self.overwrite,
                                                   self.input_records.get(job.path, ()),
                                                   [f.name for f in job.frames])))
        return planned

    def execute(self, planned) -> None:
        os.makedirs(os.path.join(self.out, "masters"), exist_ok=True)
        os.makedirs(os.path.join(self.out, "stacks"), exist_ok=True)
        progress = None
        if self.show_progress:  # a terminal line per product (skystack.progress)
            from ..progress import NightProgress

            progress = NightProgress([(os.path.relpath(job.path, self.out), len(job.frames))
                                      for job, _, _ in planned])
            log, self.log = self.log, lambda text: progress.above(log, text)
        try:
            for index, item in enumerate(planned):
                if progress is not None:
                    progress.start(index)
                try:
                    line = self._execute_one(*item)
                finally:
                    if progress is not None:
                        progress.finish()  # the terminal line is cleared before the log's
                if line is not None:
                    self.log(line)
        finally:
            if progress is not None:
                progress.close()
                self.log = log

    def _execute_one(self, job, fp: str, state) -> str | None:
        """Build (or reuse) one planned product; its log line (None when it failed)."""
        from .stacks import build_stack

        product = Product(job.kind, job.path, [f.name for f in job.frames],
                          key=job.product_key())
        if job.path in self.plan.renamed:
            product.notes.append(self.plan.renamed[job.path])
        self.products.append(product)
        t0 = time.perf_counter()
        header = fits.Header()
        header[FINGERPRINT_KEY] = (fp, "skystack night: recipe fingerprint")
        header.extend(input_cards(self.input_records.get(job.path, ()), product.inputs))
        if job.kind == "stack":
            ok = build_stack(self, job, product, header, state)
        elif isinstance(job, BadpixJob):
            ok = self._build_badpix(job, product, header, state)
        else:
            ok = self._build_master(job, product, header, state)
        product.seconds = time.perf_counter() - t0
        if ok and job.kind != "stack" and os.path.exists(job.path):
            self.master_frames[job.path] = self._held(load_frames([job.path])[0])
        if not ok:
            return None
        return (f"{job.kind:<7} {product.status:<7} {os.path.relpath(job.path, self.out):<34}"
                f"{len(job.frames):4d} frames  {product.seconds:6.2f} s"
                + (f"  ({'; '.join(product.notes)})" if product.notes else ""))

    def reuse(self, job, product: Product, role: str) -> bool:
        """An existing product with the same recipe: its frames are recorded as used."""
        product.status = "reused"
        for f in job.frames:
            rec = self.records[f.name]
            self._record_group(rec, job)
            rec.masters = self.choice(f, role).used
            rec.used = True
        return True

    def _record_group(self, rec, job) -> None:
        """The product a frame goes into, in its record; a colour light goes into its
        object's three plane stacks (one job each, R, G, B): all three are listed."""
        path = job.path and os.path.relpath(job.path, self.out)
        if getattr(job, "channel", None) is not None and rec.group:
            if path not in rec.group.split(", "):
                rec.group = f"{rec.group}, {path}"
        else:
            rec.group = path

    def frames_for(self, job, role: str) -> list[tuple]:
        """(raw record, calibrated frame) for each frame of ``job`` that can be opened."""
        pairs = []
        for f in job.frames:
            rec = self.records[f.name]
            choice = self.choice(f, role)
            self._record_group(rec, job)
            rec.masters = choice.used
            try:
                pairs.append((rec, self.light(f) if role == "light"
                              else self._frame(f, choice)))
            except SkystackError as exc:
                rec.reason = str(exc)
        return pairs

    # -- masters ---------------------------------------------------------------------------

    def _build_master(self, job, product: Product, header: fits.Header, state: str) -> bool:
        kind, path = job.kind, job.path
        if state == "reuse":
            return self.reuse(job, product, kind)
        pairs = self.frames_for(job, kind)
        if not pairs:
            product.status = "failed"
            product.notes.append("no usable frames")
            return False
        frames = [f for _, f in pairs]
        header["IMAGETYP"] = (f"MASTER {kind.upper()}", "skystack night master frame")
        header["SKYGROUP"] = (job.group, "camera / exposure / filter group")
        tmp = path
        try:
            with atomic_path(path, overwrite=True, stable=self.cluster is not None) as tmp:
                from ..api import combine_to_file

                combine_to_file(frames, tmp, extra_header=header, **MASTER_OPTIONS[kind],
                                **self.common())
                if kind == "flat":
                    level = mst.normalise_flat(tmp, label=path)
                    product.notes.append(f"median level {level:.1f} ADU")
        except SkystackError as exc:
            if kind != "flat":
                raise
            # One unusable flat group (no signal, all NaN) must not stop the night.
            mst.skip_flat_group(self.plan.masters[job.camera], path, product, pairs,
                                str(exc).replace(tmp, path), self.log)
            return False
        for rec, _ in pairs:
            rec.used = True
        product.status = "built"
        return True

    def _build_badpix(self, job: BadpixJob, product: Product, header: fits.Header,
                      state: str) -> bool:
        cm = self.plan.masters[job.camera]
        if state == "reuse":
            product.status = "reused"
            return True
        dark = None
        dark_t = math.nan
        if cm.darks:
            dark_t = max(cm.darks)
            dark = self.master_frames.get(cm.darks[dark_t])
        flats = [self.master_frames.get(p) for p in cm.flats.values()]
        flats = [f for f in flats if f is not None]
        if dark is None and not flats:
            product.status = "failed"
            product.notes.append("no master dark or flat")
            return False
        mask, counts = mst.badpix_mask(job.camera.shape, dark, dark_t, flats)
        header["IMAGETYP"] = ("MASTER BADPIX", "skystack night bad-pixel mask")
        header["NHOT"] = (counts["hot"], "hot pixels (from the master dark)")
        header["NLOWRESP"] = (counts["low"], "dead or low-response pixels (from the flats)")
        with atomic_path(job.path, overwrite=True) as tmp:
            mst.write_badpix(tmp, mask, header)
        product.status = "built"
        product.notes.append(f"{counts['hot']} hot, {counts['low']} low-response pixels")
        return True

    # -- calibrated copies and previews ----------------------------------------------------

    def save_calibrated_lights(self, frames: list[Frame], names: list[str] | None = None
                               ) -> None:
        """``--save-calibrated``: each calibrated light as float32 ADU (electrons with
        ``--gain-normalise``) in ``calibrated/``; ``names``: the frames' raw names
        (``file[EXTNAME]`` for a CCD of a mosaic), by default their paths."""
        folder = os.path.join(self.out, "calibrated")
        os.makedirs(folder, exist_ok=True)
        for f, name in zip(frames, names or [f.path for f in frames]):
            data = np.empty(f.shape, np.float32)
            f.source.read(Tile(0, f.shape[0], 0, f.shape[1]), data)
            target = self.plan.calibrated_paths[name]
            with atomic_path(target, overwrite=True) as tmp:
                fits.PrimaryHDU(data, header=f.header).writeto(tmp)

    def _quality_plot(self, product: Product, folder: str) -> None:
        """``<stack>_quality.png``: its frames' FWHM, stars, background and weight against
        time (:mod:`skystack.night.quality_plot`)."""
        from .quality_plot import quality_series, write_quality_plot

        job = next((j for j in self.plan.jobs if j.kind == "stack" and j.path == product.path),
                   None)
        if job is None:
            return
        stem = os.path.splitext(os.path.basename(product.path))[0]
        write_quality_plot(quality_series(job.frames, self.records, self.stack_options),
                           os.path.join(folder, f"{stem}_quality.png"), title=stem)

    def write_previews(self) -> None:
        """A PNG per stack built or reused (and its frames' quality plot), and an RGB
        composite per object and camera with three or more filters
        (:mod:`skystack.night.preview`)."""
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
            if "tile" in p.key:  # a sky tile's co-add (skystack.night.tiles): no RGB
                stem = os.path.splitext(os.path.basename(p.path))[0]
                write_preview(image, os.path.join(folder, f"{stem}.png"))
                continue
            write_preview(image, self.plan.preview_paths[p.path])
            self._quality_plot(p, folder)
            cam = Camera(*(tuple(c) for c in p.key["camera"]))
            by_object[(p.key["object"], cam)][p.key["filter"]] = p.path
        for (obj, cam), paths in by_object.items():
            order = filter_order_for_rgb(list(paths))
            if order is None:
                continue
            try:
                channels = [fits.getdata(paths[f]) for f in order]
                write_rgb(*channels, self.plan.rgb_paths[(obj, cam)])
            except SkystackError as exc:
                self.log(f"no RGB composite for {obj}: {exc}")
