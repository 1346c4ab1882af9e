// skystack kernels: Siril-style rejections on a pixel's sorted valid values, host and device.
//
// Included by sk_pixel.cuh after its range helpers (clamp_int, median_of_range), which these use;
// every function is a template on the column type (ArrayCol, RegCol<NMAX>, WarpCol<ITEMS>) and
// returns the kept contiguous range [*fa, *fb) of the n sorted values, as the other rejections.
// The CPU backend implements the same definitions in skystack/backends/cpu/rejections.py, whose
// docstring states them; tests/reference.py holds independent NumPy versions.
#pragma once

#include "sk_common.cuh"

namespace sk {

// An iteration of winsor / linfit that would leave fewer values than this is not applied.
constexpr int REJ_MIN_KEPT = 3;
// Winsorized sigma (Huber): values winsorized at median +- 1.5 sigma, sigma = 1.134 * their
// sample std (ddof 1), repeated until sigma changes by at most WINSOR_TOL relative (or at most
// WINSOR_MAX_STEPS times).
constexpr double WINSOR_CUT = 1.5;
constexpr double WINSOR_SCALE = 1.134;
constexpr double WINSOR_TOL = 5e-4;
constexpr int WINSOR_MAX_STEPS = 50;

SK_HD double abs_f64(double x) { return x < 0.0 ? -x : x; }

// Winsorized sigma of the sorted range [a, b) about med. The values below lo (above hi) are the
// first (last) ones of the range, so the winsorized sums are range sums plus the clamped ends.
template <class Col>
SK_HD double winsorized_sigma(const Col& col, int a, int b, double med) {
  int m = b - a;
  double mean = col.sum(a, b) / (double)m;
  double sigma = sqrt_f64(col.ssd(a, b, mean) / (double)(m - 1));
  for (int step = 0; step < WINSOR_MAX_STEPS; ++step) {
    double lo = med - WINSOR_CUT * sigma;
    double hi = med + WINSOR_CUT * sigma;
    int i1 = clamp_int(col.count_lt(lo), a, b);
    int i2 = clamp_int(col.count_le(hi), i1, b);
    double nlo = (double)(i1 - a), nhi = (double)(b - i2);
    double wmean = (nlo * lo + col.sum(i1, i2) + nhi * hi) / (double)m;
    double dl = lo - wmean, dh = hi - wmean;
    double wssd = nlo * dl * dl + col.ssd(i1, i2, wmean) + nhi * dh * dh;
    double next = WINSOR_SCALE * sqrt_f64(wssd / (double)(m - 1));
    bool done = abs_f64(next - sigma) <= WINSOR_TOL * sigma;
    sigma = next;
    if (done) break;
  }
  return sigma;
}

// Winsorized sigma clipping: each iteration rejects the values outside
// [median - sigma_lo * s, median + sigma_hi * s], s the winsorized sigma of the kept values.
template <class Col>
SK_HD void winsor_range(const Col& col, int n, const CombineParams& p, int* fa, int* fb) {
  int a = 0, b = n, it = 0;
  while (b - a >= REJ_MIN_KEPT) {
    double med = median_of_range(col, a, b);
    double s = winsorized_sigma(col, a, b, med);
    int na = clamp_int(col.count_lt(med - p.sigma_lo * s), a, b);
    int nb = clamp_int(n - col.count_gt(med + p.sigma_hi * s), na, b);
    if ((na == a && nb == b) || nb - na < REJ_MIN_KEPT) break;
    a = na;
    b = nb;
    ++it;
    if (p.maxiters >= 0 && it >= p.maxiters) break;
  }
  *fa = a;
  *fb = b;
}

// Residual of the i-th sorted value from the line alpha + beta * (i - a).
template <class Col>
SK_HD double line_residual(const Col& col, int i, int a, double alpha, double beta) {
  return (double)col.at(i) - (alpha + beta * (double)(i - a));
}

// Linear-fit clipping from the ends: a least-squares line y = alpha + beta * r through the sorted
// values y of [a, b) against their rank r (0 at a), s = mean |residual|; the low end advances
// while its residual is below -sigma_lo * s, then the high end retreats while its residual is
// above sigma_hi * s (a value between two kept values is never rejected: the range stays whole).
template <class Col>
SK_HD void linfit_range(const Col& col, int n, const CombineParams& p, int* fa, int* fb) {
  int a = 0, b = n, it = 0;
  while (b - a >= REJ_MIN_KEPT) {
    int m = b - a;
    double rmean = 0.5 * (double)(m - 1);
    double ymean = col.sum(a, b) / (double)m;
    double sxy = col.rank_sum(a, b) - rmean * ymean * (double)m;  // sum (rank - rmean) y
    double sxx = (double)m * ((double)m * (double)m - 1.0) / 12.0;
    double beta = sxy / sxx;
    double alpha = ymean - beta * rmean;
    double s = col.line_abs_dev(a, b, alpha, beta) / (double)m;
    int na = a;
    while (na < b && line_residual(col, na, a, alpha, beta) < -p.sigma_lo * s) ++na;
    int nb = b;
    while (nb > na && line_residual(col, nb - 1, a, alpha, beta) > p.sigma_hi * s) --nb;
    if ((na == a && nb == b) || nb - na < REJ_MIN_KEPT) break;
    a = na;
    b = nb;
    ++it;
    if (p.maxiters >= 0 && it >= p.maxiters) break;
  }
  *fa = a;
  *fb = b;
}

// Siril's percentile clipping, one pass: keep median - pctclip_lo |median| <= x <=
// median + pctclip_hi |median|. A median of 0 has no relative distance: nothing is rejected.
template <class Col>
SK_HD void pctclip_range(const Col& col, int n, const CombineParams& p, int* fa, int* fb) {
  double med = median_of_range(col, 0, n);
  double mag = abs_f64(med);
  *fa = 0;
  *fb = n;
  if (mag == 0.0) return;
  int lo = clamp_int(col.count_lt(med - p.pctclip_lo * mag), 0, n);
  *fa = lo;
  *fb = clamp_int(n - col.count_gt(med + p.pctclip_hi * mag), lo, n);
}

}  // namespace sk
