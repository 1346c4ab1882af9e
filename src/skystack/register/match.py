"""Matching a frame's stars to the reference's and fitting the transform between them.

Conventions: 0-based pixel positions, ``(x, y) = (column, row)``. A transform maps **frame
pixels → reference pixels**.

Method
------
1. **Triangles**: for each of the brightest stars (40 of the frame, 60 of the reference, so that
   a different ranking of brightness still leaves most of them in common), triangles with pairs
   of its 7 nearest neighbours. A triangle's invariants under shift, rotation, scale and mirror
   are its side ratios ``(L2/L1, L3/L1)`` (``L1 ≥ L2 ≥ L3``); ordering the sides also orders the
   vertices, so a pair of similar triangles gives three star correspondences.
2. **Hypotheses**: frame triangles are paired with reference triangles of nearly equal
   invariants (KD-tree, radius 0.01); each pair gives an exact affine map of the three vertices.
   Maps that are not close to a similarity, or whose scale lies outside ``scale_range``, are
   dropped.
3. **Votes**: each hypothesis maps the frame's brightest 100 stars; the one that lands most of
   them within ``tol`` px of a reference star wins (a RANSAC over triangle samples). It must be
   confirmed by stars beyond its own triangle, otherwise the frame is not matched.
4. **Refinement**: all stars (up to ``max_stars``) are paired one-to-one with their nearest
   reference star under the current transform, the model is fitted by least squares, pairs whose
   residual exceeds max(3 σ, 0.3 px) (σ from the MAD) are dropped, and this repeats until the
   pairs no longer change. The capture radius starts at ``tol`` and then follows the residuals,
   so stars far out in a distorted field are captured as the fit improves.

Models: ``shift``, ``similarity`` (shift, rotation, one scale; a mirrored frame is fitted as a
mirrored similarity), ``affine``, ``poly2`` and ``poly3`` (each reference coordinate a full
polynomial of degree 2 or 3 in the frame's, for field distortion). When too few stars are matched
for the requested model, the most general model they support is used and the reason says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["MODELS", "Transform", "Registration", "match_stars", "fit_transform",
           "identity_transform"]

MODELS = ("shift", "similarity", "affine", "poly2", "poly3")
_DEGREE = {"shift": 1, "similarity": 1, "affine": 1, "poly2": 2, "poly3": 3}
# Pairs needed to fit each model with at least a little redundancy.
_MIN_PAIRS = {"shift": 2, "similarity": 3, "affine": 4, "poly2": 8, "poly3": 14}


def _terms(degree: int) -> list[tuple[int, int]]:
    """Monomials u^p v^q of total degree ≤ ``degree``, by degree then decreasing p."""
    return [(d - q, q) for d in range(degree + 1) for q in range(d + 1)]


def _design(u: np.ndarray, v: np.ndarray, terms) -> np.ndarray:
    return np.stack([u**p * v**q for p, q in terms], axis=1)


@dataclass(frozen=True)
class Transform:
    """A map frame pixel → reference pixel, as polynomials in normalised frame coordinates.

    ``u = (x - origin[0]) / norm``, ``v = (y - origin[1]) / norm``; then
    ``x_ref = Σ cx[k] u^p v^q`` and ``y_ref = Σ cy[k] u^p v^q`` over :attr:`terms`
    (degree 1 for shift/similarity/affine). Callable on arrays: ``T(x, y) -> (x_ref, y_ref)``.
    """

    model: str
    cx: np.ndarray
    cy: np.ndarray
    origin: tuple[float, float]
    norm: float

    @property
    def degree(self) -> int:
        return _DEGREE[self.model]

    @property
    def terms(self) -> list[tuple[int, int]]:
        return _terms(self.degree)

    def __call__(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        u = (np.asarray(x, np.float64) - self.origin[0]) / self.norm
        v = (np.asarray(y, np.float64) - self.origin[1]) / self.norm
        xr = np.zeros(np.broadcast(u, v).shape)
        yr = np.zeros_like(xr)
        for k, (p, q) in enumerate(self.terms):
            m = u**p * v**q
            xr = xr + self.cx[k] * m
            yr = yr + self.cy[k] * m
        return xr, yr

    def jacobian(self, x: float, y: float) -> np.ndarray:
        """d(x_ref, y_ref)/d(x, y) at one frame position, 2×2."""
        u = (x - self.origin[0]) / self.norm
        v = (y - self.origin[1]) / self.norm
        jac = np.zeros((2, 2))
        for k, (p, q) in enumerate(self.terms):
            du = p * u ** (p - 1) * v**q if p else 0.0
            dv = q * u**p * v ** (q - 1) if q else 0.0
            jac[0] += self.cx[k] * np.array([du, dv])
            jac[1] += self.cy[k] * np.array([du, dv])
        return jac / self.norm

    def describe(self) -> dict:
        """Shift of the frame centre (origin) and rotation/scale of the linear part there."""
        x0, y0 = self.origin
        xr, yr = self(x0, y0)
        jac = self.jacobian(x0, y0)
        det = float(np.linalg.det(jac))
        rot = math.degrees(math.atan2(jac[1, 0] - np.sign(det) * jac[0, 1],
                                      jac[0, 0] + np.sign(det) * jac[1, 1]))
        return {"dx": float(xr) - x0, "dy": float(yr) - y0, "rotation_deg": rot,
                "scale": math.sqrt(abs(det)), "mirrored": det < 0}


def identity_transform(shape: tuple[int, int], model: str = "similarity") -> Transform:
    """The identity as a ``model`` transform of a frame of ``shape`` (rows, cols)."""
    origin = ((shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0)
    norm = max(shape) / 2.0
    n = len(_terms(_DEGREE[model]))
    cx = np.zeros(n)
    cy = np.zeros(n)
    cx[0], cx[1] = origin[0], norm
    cy[0], cy[2] = origin[1], norm
    return Transform(model, cx, cy, origin, norm)


def fit_transform(model: str, xf, yf, xr, yr, shape: tuple[int, int],
                  mirrored: bool = False) -> Transform:
    """Least-squares ``model`` transform taking frame points (xf, yf) to reference (xr, yr)."""
    origin = ((shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0)
    norm = max(shape) / 2.0
    u = (np.asarray(xf, float) - origin[0]) / norm
    v = (np.asarray(yf, float) - origin[1]) / norm
    xr = np.asarray(xr, float)
    yr = np.asarray(yr, float)
    n = len(_terms(_DEGREE[model]))
    cx = np.zeros(n)
    cy = np.zeros(n)
    if model == "shift":
        cx[:3] = [np.mean(xr - u * norm), norm, 0.0]
        cy[:3] = [np.mean(yr - v * norm), 0.0, norm]
    elif model == "similarity":
        # x_r = tx + a u - b v ; y_r = ty + b u + a v  (mirrored: v → -v)
        s = -1.0 if mirrored else 1.0
        one, zero = np.ones_like(u), np.zeros_like(u)
        a_mat = np.concatenate([np.stack([one, zero, u, -s * v], 1),
                                np.stack([zero, one, s * v, u], 1)])
        sol = np.linalg.lstsq(a_mat, np.concatenate([xr, yr]), rcond=None)[0]
        tx, ty, a, b = sol
        cx[:3] = [tx, a, -s * b]
        cy[:3] = [ty, b, s * a]
    else:
        design = _design(u, v, _terms(_DEGREE[model]))
        # Column scaling keeps the cubic terms well conditioned (u, v are in [-1, 1] anyway).
        cx = np.linalg.lstsq(design, xr, rcond=None)[0]
        cy = np.linalg.lstsq(design, yr, rcond=None)[0]
    return Transform(model, cx, cy, origin, norm)


@dataclass
class Registration:
    """How one frame maps onto the reference.

    ``status`` is ``"ok"`` or ``"failed"`` (then ``reason`` says why in words and ``transform``
    is None). ``model`` is the model fitted (it may be simpler than asked; ``reason`` then says
    so). ``rms`` and ``max_residual`` are the residuals (px, in the reference) of the
    ``n_matched`` star pairs kept by the fit.
    """

    status: str
    model: str
    transform: Transform | None = None
    n_matched: int = 0
    rms: float = math.nan
    max_residual: float = math.nan
    reason: str = ""
    n_stars: int = 0
    n_reference: int = 0
    pairs: np.ndarray | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def failed(cls, model: str, reason: str, n_stars: int = 0,
               n_reference: int = 0) -> Registration:
        return cls("failed", model, reason=reason, n_stars=n_stars, n_reference=n_reference)


def _triangles(x: np.ndarray, y: np.ndarray, k: int = 7):
    """Triangles from each star and pairs of its ``k`` nearest neighbours.

    Returns (vertices (n, 3) ordered opposite the longest, middle and shortest side,
    invariants (n, 2) = (L2/L1, L3/L1))."""
    n = x.size
    if n < 3:
        return np.zeros((0, 3), np.intp), np.zeros((0, 2))
    pts = np.stack([x, y], 1)
    k = min(k, n - 1)
    from scipy.spatial import cKDTree  # imported on use: 0.15 s that most runs do not need

    _, nb = cKDTree(pts).query(pts, k + 1)
    nb = nb[:, 1:]
    ii, jj = np.triu_indices(k, 1)
    tri = np.concatenate([np.repeat(np.arange(n), ii.size)[:, None],
                          nb[:, ii].reshape(-1, 1), nb[:, jj].reshape(-1, 1)], axis=1)
    tri = np.unique(np.sort(tri, axis=1), axis=0)
    p = pts[tri]  # (m, 3, 2)
    # side opposite vertex i joins the other two
    sides = np.stack([np.hypot(*(p[:, 1] - p[:, 2]).T), np.hypot(*(p[:, 0] - p[:, 2]).T),
                      np.hypot(*(p[:, 0] - p[:, 1]).T)], 1)
    order = np.argsort(-sides, axis=1)
    sides = np.take_along_axis(sides, order, 1)
    verts = np.take_along_axis(tri, order, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.stack([sides[:, 1] / sides[:, 0], sides[:, 2] / sides[:, 0]], 1)
    # Slivers and tiny triangles carry little information and much noise.
    good = (sides[:, 0] > 8.0) & (inv[:, 1] > 0.1) & np.isfinite(inv).all(1)
    return verts[good], inv[good]


def _affine_from_triangles(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Affine (n, 2, 3) mapping each triangle src (n, 3, 2) exactly onto dst (n, 3, 2)."""
    a = np.concatenate([src, np.ones(src.shape[:2] + (1,))], axis=2)  # (n, 3, 3)
    ok = np.abs(np.linalg.det(a)) > 1e-6
    out = np.full((src.shape[0], 2, 3), np.nan)
    if ok.any():
        sol = np.linalg.solve(a[ok], dst[ok])  # (n, 3, 2): rows = coefficients of x, y, 1
        out[ok] = np.transpose(sol, (0, 2, 1))
    return out


def _one_to_one(d: np.ndarray, j: np.ndarray, radius: float) -> np.ndarray:
    """Frame indices whose nearest reference star is within ``radius`` and claimed by no closer
    frame star."""
    cand = np.flatnonzero(d <= radius)
    if cand.size == 0:
        return cand
    order = cand[np.argsort(d[cand], kind="stable")]
    _, first = np.unique(j[order], return_index=True)
    return np.sort(order[first])


def _required(n_frame: int, n_ref: int) -> int:
    """Stars that must agree with a hypothesis beyond chance: all of very small lists, else 6."""
    return max(4, min(6, math.ceil(0.5 * min(n_frame, n_ref))))


def match_stars(xf, yf, xr, yr, shape: tuple[int, int], *, model: str = "similarity",
                tol: float = 3.0, scale_range: tuple[float, float] = (0.5, 2.0),
                max_stars: int = 300) -> Registration:
    """Register a frame's stars (xf, yf) onto the reference's (xr, yr).

    Both lists brightest first; ``shape`` (rows, cols) is the frame's (it sets the origin and
    normalisation of the transform). ``tol``: capture radius (px) of the hypothesis vote and the
    first refinement. Returns a :class:`Registration` (never raises on too few stars).
    """
    from scipy.spatial import cKDTree

    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}: choose from {', '.join(MODELS)}")
    xf, yf = np.asarray(xf, float)[:max_stars], np.asarray(yf, float)[:max_stars]
    xr, yr = np.asarray(xr, float)[:max_stars], np.asarray(yr, float)[:max_stars]
    nf, nr = xf.size, xr.size
    if nf < 4:
        return Registration.failed(model, f"{nf} star{'s' * (nf != 1)} detected (need >= 4)",
                                   nf, nr)
    if nr < 4:
        return Registration.failed(model, f"reference has {nr} stars (need >= 4)", nf, nr)
    vf, invf = _triangles(xf[:40], yf[:40])
    vr, invr = _triangles(xr[:60], yr[:60])
    if len(vf) == 0 or len(vr) == 0:
        return Registration.failed(model, "no usable triangle of stars", nf, nr)
    tree = cKDTree(invr)
    dist, idx = tree.query(invf, k=4, distance_upper_bound=0.01)
    fi, kk = np.nonzero(np.isfinite(dist))
    if fi.size == 0:
        return Registration.failed(model, "no consistent triangle match (no similar "
                                          "triangles)", nf, nr)
    ri = idx[fi, kk]
    order = np.argsort(dist[fi, kk], kind="stable")[:3000]
    fi, ri = fi[order], ri[order]
    pf = np.stack([xf, yf], 1)
    pr = np.stack([xr, yr], 1)
    aff = _affine_from_triangles(pf[vf[fi]], pr[vr[ri]])
    lin = aff[:, :, :2]
    with np.errstate(invalid="ignore"):
        det = np.linalg.det(np.nan_to_num(lin))
        sv = np.linalg.svd(np.nan_to_num(lin), compute_uv=False)
        scale = np.sqrt(np.abs(det))
        good = (np.isfinite(aff).all(axis=(1, 2)) & (scale >= scale_range[0])
                & (scale <= scale_range[1]) & (sv[:, 1] > 0) & (sv[:, 0] / np.maximum(
                    sv[:, 1], 1e-12) < 1.15))
    aff = aff[good]
    if aff.shape[0] == 0:
        return Registration.failed(model, "no consistent triangle match (no plausible "
                                          "transform)", nf, nr)
    # Votes: each hypothesis maps the brightest 100 frame stars into the reference.
    m = min(nf, 100)
    probe = np.concatenate([pf[:m], np.ones((m, 1))], 1)  # (m, 3)
    mapped = np.einsum("hij,mj->hmi", aff, probe)  # (h, m, 2)
    rtree = cKDTree(pr)
    d, _ = rtree.query(mapped.reshape(-1, 2), distance_upper_bound=tol)
    d = d.reshape(aff.shape[0], m)
    hits = np.isfinite(d).sum(1)
    score = hits - np.where(np.isfinite(d), d, 0).sum(1) / (tol * m + 1)
    best = int(np.argmax(score))
    # Chance hits: the probes that land within tol of some reference star at random, on top of
    # the hypothesis's own three vertices; the winner must stand well above them.
    span = np.ptp(pr, axis=0)
    area = max(float((span[0] + 2 * tol) * (span[1] + 2 * tol)), 1.0)
    chance = m * min(1.0, nr * math.pi * tol**2 / area)
    need = max(_required(nf, nr), math.ceil(3 + chance + 4 * math.sqrt(chance)))
    if hits[best] < need:
        return Registration.failed(model, f"no consistent triangle match (best: {hits[best]} "
                                          f"stars agree, need {need})", nf, nr)
    a = aff[best]
    mirrored = np.linalg.det(a[:, :2]) < 0
    # Start from the winning hypothesis, as an affine transform.
    t_xr, t_yr = (a[0, 0] * xf + a[0, 1] * yf + a[0, 2], a[1, 0] * xf + a[1, 1] * yf + a[1, 2])
    d, j = rtree.query(np.stack([t_xr, t_yr], 1))
    sel = _one_to_one(d, j, tol)
    return _refine(model, xf, yf, pr, rtree, sel, j[sel], shape, tol, bool(mirrored), nf)


def _fallback(model: str, n_pairs: int) -> str | None:
    """The most general model up to ``model`` that ``n_pairs`` pairs support."""
    for m in MODELS[MODELS.index(model)::-1]:
        if n_pairs >= _MIN_PAIRS[m]:
            return m
    return None


def _refine(model, xf, yf, pr, rtree, sel, ref, shape, tol, mirrored, nf) -> Registration:
    """Iterative pairing / least-squares fit / outlier clipping (see module docstring).

    ``sel`` (frame indices) and ``ref`` (reference indices) are the current pairs."""
    nr = pr.shape[0]
    # Low-order models first (wide capture radius), then the model asked for.
    order = MODELS.index(model)
    stages = [m for m in ("similarity", "affine") if MODELS.index(m) < order] + [model]
    prev = None
    transform = None
    used = model
    for it in range(40):
        stage = stages[min(it, len(stages) - 1)]
        used = _fallback(stage, sel.size)
        if used is None:
            return Registration.failed(model, f"only {sel.size} star{'s' * (sel.size != 1)} "
                                              "matched", nf, nr)
        transform = fit_transform(used, xf[sel], yf[sel], pr[ref, 0], pr[ref, 1], shape,
                                  mirrored)
        tx, ty = transform(xf, yf)
        d, j = rtree.query(np.stack([tx, ty], 1))
        final = it >= len(stages) - 1
        if final:
            # |r| of a 2-D Gaussian offset is Rayleigh: median = 1.1774 sigma per axis.
            sigma = float(np.median(np.hypot(tx[sel] - pr[ref, 0], ty[sel] - pr[ref, 1])))
            radius = min(tol, max(0.5, 3.0 * sigma / 1.1774 * 1.35))
        else:
            radius = tol
        sel = _one_to_one(d, j, radius)
        ref = j[sel]
        pairs = (sel.tobytes(), ref.tobytes())
        if final and pairs == prev:
            break
        prev = pairs if final else None
    need = _required(nf, nr)
    if sel.size < need:
        return Registration.failed(model, f"only {sel.size} stars matched (need {need})",
                                   nf, nr)
    used = _fallback(model, sel.size)
    transform = fit_transform(used, xf[sel], yf[sel], pr[ref, 0], pr[ref, 1], shape, mirrored)
    tx, ty = transform(xf[sel], yf[sel])
    res = np.hypot(tx - pr[ref, 0], ty - pr[ref, 1])
    reason = "" if used == model else (f"{model} needs >= {_MIN_PAIRS[model]} matched stars, "
                                       f"{sel.size} found: fitted {used}")
    return Registration("ok", used, transform, int(sel.size), float(np.sqrt(np.mean(res**2))),
                        float(res.max()), reason, nf, nr, pairs=np.stack([sel, ref], 1))
