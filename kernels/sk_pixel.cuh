// skystack kernels: the per-pixel combine algorithms, written once for host and device.
//
// A pixel's valid values, sorted ascending (invalid ones sorted last as +inf), are reached through
// a *column* type that offers a few primitives:
//   at(i)          the i-th smallest valid value (i uniform across a warp for WarpCol)
//   count_lt(x)    how many valid values are < x   (0 when x is NaN)
//   count_le(x)    how many valid values are <= x  (0 when x is NaN)
//   count_gt(x)    how many valid values are > x   (0 when x is NaN)
//   sum(lo, hi)    float64 sum of values [lo, hi)
//   ssd(lo, hi, m) float64 sum of squared deviations from m over [lo, hi)
//   rank_sum(lo, hi)              float64 sum of (i - lo) * value i over [lo, hi)
//   line_abs_dev(lo, hi, al, be)  float64 sum of |value i - (al + be * (i - lo))| over [lo, hi)
// ArrayCol (a plain array: host tests, any N), RegCol<NMAX> (one GPU thread, values in registers:
// every index is a compile-time constant after unrolling) and WarpCol<ITEMS> (combine.cu: a warp
// holds the values) implement them; the rejection logic below is shared by all three.
//
// After sorting, every rejection keeps a contiguous range [lo, hi) of the sorted values, so the
// combine is range arithmetic. Semantics follow the CPU backend (skystack/backends/cpu/kernels.py)
// and astropy.stats.sigma_clip's fast path.
#pragma once

#include "sk_common.cuh"
#include "sk_reject_stat.cuh"

namespace sk {

// A sorted column in memory (host tests; any length).
struct ArrayCol {
  const float* v;
  int n;

  SK_HD float at(int i) const { return v[i]; }
  SK_HD int count_lt(double x) const {
    int a = 0, b = n;  // first index with v >= x; NaN compares false, giving n: fixed below
    if (!(x == x)) return 0;
    while (a < b) {
      int m = (a + b) / 2;
      if ((double)v[m] < x) a = m + 1; else b = m;
    }
    return a;
  }
  SK_HD int count_le(double x) const {
    if (!(x == x)) return 0;
    int a = 0, b = n;
    while (a < b) {
      int m = (a + b) / 2;
      if ((double)v[m] <= x) a = m + 1; else b = m;
    }
    return a;
  }
  SK_HD int count_gt(double x) const { return (x == x) ? n - count_le(x) : 0; }
  SK_HD double sum(int lo, int hi) const {
    double s = 0.0;
    for (int i = lo; i < hi; ++i) s += (double)v[i];
    return s;
  }
  SK_HD double ssd(int lo, int hi, double mean) const {
    double s = 0.0;
    for (int i = lo; i < hi; ++i) {
      double d = (double)v[i] - mean;
      s += d * d;
    }
    return s;
  }
  SK_HD double rank_sum(int lo, int hi) const {
    double s = 0.0;
    for (int i = lo; i < hi; ++i) s += (double)(i - lo) * (double)v[i];
    return s;
  }
  SK_HD double line_abs_dev(int lo, int hi, double alpha, double beta) const {
    double s = 0.0;
    for (int i = lo; i < hi; ++i) {
      double d = (double)v[i] - (alpha + beta * (double)(i - lo));
      s += d < 0.0 ? -d : d;
    }
    return s;
  }
};

// A sorted column held in a thread's registers: loops are unrolled over NMAX with predicates, so
// no array index is ever a run-time value (run-time indices would move the array to local memory).
template <int NMAX>
struct RegCol {
  const float* v;  // float[NMAX], sorted, +inf beyond n
  int n;

  SK_HD float at(int i) const {
    float x = v[0];
#pragma unroll
    for (int k = 1; k < NMAX; ++k) x = (k == i) ? v[k] : x;
    return x;
  }
  SK_HD int count_lt(double x) const {
    int c = 0;
#pragma unroll
    for (int k = 0; k < NMAX; ++k) c += (k < n && (double)v[k] < x) ? 1 : 0;
    return c;
  }
  SK_HD int count_le(double x) const {
    int c = 0;
#pragma unroll
    for (int k = 0; k < NMAX; ++k) c += (k < n && (double)v[k] <= x) ? 1 : 0;
    return c;
  }
  SK_HD int count_gt(double x) const {
    int c = 0;
#pragma unroll
    for (int k = 0; k < NMAX; ++k) c += (k < n && (double)v[k] > x) ? 1 : 0;
    return c;
  }
  SK_HD double sum(int lo, int hi) const {
    double s = 0.0;
#pragma unroll
    for (int k = 0; k < NMAX; ++k) s += (k >= lo && k < hi) ? (double)v[k] : 0.0;
    return s;
  }
  SK_HD double ssd(int lo, int hi, double mean) const {
    double s = 0.0;
#pragma unroll
    for (int k = 0; k < NMAX; ++k) {
      double d = (double)v[k] - mean;
      s += (k >= lo && k < hi) ? d * d : 0.0;
    }
    return s;
  }
  // Loops over at(): unrolled masked sums over NMAX here spill registers at NMAX = 48 and 64.
  SK_HD double rank_sum(int lo, int hi) const {
    double s = 0.0;
    for (int i = lo; i < hi; ++i) s += (double)(i - lo) * (double)at(i);
    return s;
  }
  SK_HD double line_abs_dev(int lo, int hi, double alpha, double beta) const {
    double s = 0.0;
    for (int i = lo; i < hi; ++i) {
      double d = (double)at(i) - (alpha + beta * (double)(i - lo));
      s += d < 0.0 ? -d : d;
    }
    return s;
  }
};

SK_HD int clamp_int(int x, int lo, int hi) { return x < lo ? lo : (x > hi ? hi : x); }

template <class Col>
SK_HD double median_of_range(const Col& col, int lo, int hi) {
  int m = hi - lo;
  int mid = lo + m / 2;
  if (m % 2 == 1) return (double)col.at(mid);
  return 0.5 * ((double)col.at(mid - 1) + (double)col.at(mid));
}

// k-th smallest (0-based) of the deviations from med: left L[i] = med - col[split - 1 - i] and
// right R[j] = col[split + j] - med are both ascending; bisect on how many come from L.
template <class Col>
SK_HD double kth_deviation(const Col& col, int split, int n_left, int n_right, double med, int k) {
  int need = k + 1;
  int a = need - n_right > 0 ? need - n_right : 0;
  int b = need < n_left ? need : n_left;
  while (a < b) {
    int i = (a + b) / 2;
    int j = need - i;
    if (med - (double)col.at(split - 1 - i) < (double)col.at(split + j - 1) - med) a = i + 1;
    else b = i;
  }
  int j = need - a;
  double d = -f64_inf();
  if (a > 0) d = med - (double)col.at(split - a);
  if (j > 0) {
    double r = (double)col.at(split + j - 1) - med;
    d = r > d ? r : d;
  }
  return d;
}

// Median absolute deviation (unscaled) of the range [lo, hi) about its median med.
template <class Col>
SK_HD double mad_of_range(const Col& col, int lo, int hi, double med) {
  int m = hi - lo;
  // Every value before split is <= med: the first index past lo + m/2 holding a value > med.
  int split = clamp_int(col.count_le(med), lo + m / 2, hi);
  int n_left = split - lo;
  int n_right = hi - split;
  if (m % 2 == 1) return kth_deviation(col, split, n_left, n_right, med, m / 2);
  return 0.5 * (kth_deviation(col, split, n_left, n_right, med, m / 2 - 1) +
                kth_deviation(col, split, n_left, n_right, med, m / 2));
}

// Percentile frac (0..1) of the sorted range: NumPy's default linear interpolation.
template <class Col>
SK_HD double percentile_of_range(const Col& col, int lo, int hi, double frac) {
  double pos = frac * (double)(hi - lo - 1);
  int i = (int)floor_f64(pos);
  double t = pos - (double)i;
  double a = (double)col.at(lo + i);
  if (i + 1 >= hi - lo) return a;
  return a + t * ((double)col.at(lo + i + 1) - a);
}

// Kept range [*fa, *fb) of astropy's sigma_clip (fast path) on the n sorted valid values.
// astropy iterates on a shrinking buffer (each iteration's bounds cut the values still kept),
// stops when an iteration rejects nothing, when nothing would be left, or after maxiters
// iterations (< 0: no limit), and finally keeps *all* values within the last bounds, inclusive.
template <class Col>
SK_HD void sigclip_range(const Col& col, int n, const CombineParams& p, int* fa, int* fb) {
  int a = 0, b = n, it = 0;
  double lower = -f64_inf(), upper = f64_inf();
  while (true) {
    int m = b - a;
    double med = 0.0, mean = 0.0, std;
    if (p.use_median || p.use_mad) med = median_of_range(col, a, b);
    if (!p.use_median || !p.use_mad) mean = col.sum(a, b) / (double)m;
    double cen = p.use_median ? med : mean;
    if (p.use_mad) std = mad_of_range(col, a, b, med) * MAD_TO_SIGMA;
    else std = sqrt_f64(col.ssd(a, b, mean) / (double)m);
    lower = cen - p.sigma_lo * std;
    upper = cen + p.sigma_hi * std;
    int na = clamp_int(col.count_lt(lower), a, b);
    int nb = clamp_int(n - col.count_gt(upper), na, b);
    if (nb - na == m || nb == na) break;
    a = na;
    b = nb;
    ++it;
    if (p.maxiters >= 0 && it >= p.maxiters) break;
  }
  int lo = clamp_int(col.count_lt(lower), 0, n);
  *fa = lo;
  *fb = clamp_int(n - col.count_gt(upper), lo, n);
}

// Tukey-McLaughlin standard error of the mean of the sorted range [lo, hi) of n sorted valid
// values: s_w sqrt(n) / h, h = hi - lo, s_w the ddof = 1 standard deviation of the winsorized
// sample (values below the range set to xlo = x[lo], above it to xhi = x[hi-1]). The kept values'
// own scatter over sqrt(h) ignores that the trim points move with the data (2x too small for an
// interquartile mean of Gaussian data). From the kept range's mean and ssd by the parallel-axis
// theorem, O(1). s / sqrt(n) when nothing is trimmed; NaN when h < 2.
// (backends/cpu/kernels.py, _winsorized_se_of_mean.)
SK_HD double winsorized_se_of_mean(int n, int lo, int hi, double mean, double ssd, double xlo,
                                   double xhi) {
  int h = hi - lo;
  if (h < 2) return f64_nan();
  double nlo = (double)lo;
  double nhi = (double)(n - hi);
  double hf = (double)h;
  double nf = (double)n;
  double mean_w = (hf * mean + nlo * xlo + nhi * xhi) / nf;
  double d = mean - mean_w;
  double dlo = xlo - mean_w;
  double dhi = xhi - mean_w;
  double ssd_w = ssd + hf * d * d + nlo * dlo * dlo + nhi * dhi * dhi;
  return sqrt_f64(ssd_w / (nf - 1.0)) * sqrt_f64(nf) / hf;
}

// Unweighted combined value and standard error of the sorted range [lo, hi) of the n sorted
// valid values; mean and sum take the winsorized standard error.
template <class Col>
SK_HD PixelResult reduce_sorted_range(int method, const Col& col, int n, int lo, int hi) {
  int m = hi - lo;
  if (method == MEDIAN) {
    PixelResult r;
    r.count = m;
    r.value = median_of_range(col, lo, hi);
    if (m < 2) {
      r.uncertainty = f64_nan();
    } else {
      // sigma from the interquartile range: robust like the MAD, O(1) on sorted values.
      double iqr = percentile_of_range(col, lo, hi, 0.75) - percentile_of_range(col, lo, hi, 0.25);
      r.uncertainty = MEDIAN_SE_FACTOR * (iqr / IQR_TO_SIGMA) / sqrt_f64((double)m);
    }
    return r;
  }
  double mean = col.sum(lo, hi) / (double)m;
  double ssd = col.ssd(lo, hi, mean);
  if (method == MEAN || method == SUM) {
    PixelResult r;
    r.count = m;
    double se = winsorized_se_of_mean(n, lo, hi, mean, ssd, (double)col.at(lo),
                                      (double)col.at(hi - 1));
    r.value = (method == MEAN) ? mean : mean * (double)m;
    r.uncertainty = (method == MEAN) ? se : se * (double)m;
    return r;
  }
  return moments_to_result(method, m, (double)m, (double)m, mean * (double)m, ssd,
                           (double)col.at(lo), (double)col.at(hi - 1));
}

// Picks, in frame order, the values of a kept sorted range [vlo .. vhi]: every value strictly
// inside, and values equal to an end only as many times as that end occurs in the range.
struct KeptSelector {
  float vlo;
  float vhi;
  int nlo;
  int nhi;

  SK_HD bool take(float v) {
    if (v > vlo && v < vhi) return true;
    if (v == vlo && nlo > 0) { --nlo; return true; }
    if (v == vhi && nhi > 0) { --nhi; return true; }
    return false;
  }
};

// Weighted mean or sum of the values kept in the sorted range [lo, hi). Weights belong to frames
// and sorting lost each value's frame, so the kept values are found again in frame order by value:
// strictly inside (col[lo], col[hi-1]) always, and equal to an end only as many times as that
// value occurs inside the range (ties at a rank cut go to the earliest frames). With rejection
// the standard error is the weighted one times the unweighted winsorized / naive ratio; where the
// kept values are all equal (naive SE 0), the unweighted winsorized SE (x sum w for the sum).
template <class Col>
SK_HD PixelResult reduce_weighted(int method, const FrameView& fr, const CombineParams& p,
                                  const Col& col, int n, int lo, int hi) {
  float vlo = col.at(lo);
  float vhi = col.at(hi - 1);
  int need_lo = clamp_int(col.count_le((double)vlo), lo, hi) - lo;
  int need_hi = 0;
  if (vhi != vlo) need_hi = hi - clamp_int(col.count_lt((double)vhi), lo, hi);
  double v1 = 0.0, v2 = 0.0, swx = 0.0;
  KeptSelector sel{vlo, vhi, need_lo, need_hi};
  for (int k = 0; k < fr.nf; ++k) {
    float raw = fr.raw(k);
    float v = mul_add_f32(raw, fr.scale[k], fr.zero[k]);
    if (is_valid(raw, v, p) && sel.take(v)) {
      double w = fr.weights[k];
      v1 += w;
      v2 += w * w;
      swx += w * (double)v;
    }
  }
  double mean = swx / v1;
  // Second pass over the same selection for the variance about the weighted mean.
  double ssd = 0.0;
  sel = KeptSelector{vlo, vhi, need_lo, need_hi};
  for (int k = 0; k < fr.nf; ++k) {
    float raw = fr.raw(k);
    float v = mul_add_f32(raw, fr.scale[k], fr.zero[k]);
    if (is_valid(raw, v, p) && sel.take(v)) {
      double d = (double)v - mean;
      ssd += fr.weights[k] * d * d;
    }
  }
  PixelResult r = moments_to_result(method, hi - lo, v1, v2, swx, ssd, (double)vlo, (double)vhi);
  int h = hi - lo;
  if (h < n && h > 1) {
    double m_h = col.sum(lo, hi) / (double)h;
    double ssd_h = col.ssd(lo, hi, m_h);
    double se_w = winsorized_se_of_mean(n, lo, hi, m_h, ssd_h, (double)vlo, (double)vhi);
    double se_naive = sqrt_f64(ssd_h / (double)(h - 1)) / sqrt_f64((double)h);
    if (se_naive > 0.0) {
      r.uncertainty *= se_w / se_naive;
    } else {
      r.uncertainty = (method == MEAN) ? se_w : se_w * v1;
    }
  }
  return r;
}

}  // namespace sk

// winsor, linfit, pctclip: templates that use the range helpers above.
#include "sk_reject.cuh"

namespace sk {

// Whether combine_sorted_pixel on this column type runs winsor and linfit. combine.cu turns them
// off for its widest warp kernel, whose registers they would spill; the GPU backend never sends
// those rejections there (skystack/backends/gpu/kernels.py, choose_combine_kernel).
template <class Col>
struct RunsIterativeSiril {
  static constexpr bool value = true;
};

// The whole order-statistics combine of one pixel whose n valid values are sorted in col.
template <class Col>
SK_HD PixelResult combine_sorted_pixel(const Col& col, int n, const CombineParams& p,
                                       const FrameView& fr) {
  if (n == 0) return empty_result();
  int lo = 0, hi = n;
  if (p.reject == REJ_SIGCLIP) {
    sigclip_range(col, n, p, &lo, &hi);
  } else if (p.reject == REJ_MINMAX) {
    lo = p.nlow;
    hi = n - p.nhigh;
  } else if (p.reject == REJ_PERCENTILE) {
    lo = (int)floor_f64((double)n * p.plow / 100.0);
    hi = n - (int)floor_f64((double)n * p.phigh / 100.0);
  } else if (p.reject == REJ_WINSOR || p.reject == REJ_LINFIT) {
    if constexpr (RunsIterativeSiril<Col>::value) {
      if (p.reject == REJ_WINSOR) winsor_range(col, n, p, &lo, &hi);
      else linfit_range(col, n, p, &lo, &hi);
    } else {
      return empty_result();  // never launched: see RunsIterativeSiril
    }
  } else if (p.reject == REJ_PCTCLIP) {
    pctclip_range(col, n, p, &lo, &hi);
  } else if (p.reject == REJ_ESD) {
    esd_range(col, n, p, &lo, &hi);
  } else if (p.reject == REJ_CCDCLIP) {
    if (!NoCcdclip<Col>::value) ccdclip_range(col, n, p, fr.scale, fr.zero, &lo, &hi);
  } else if (p.reject == REJ_PCLIP) {
    pclip_range(col, n, p, fr.nf, &lo, &hi);
  }
  if (hi <= lo) return empty_result();
  if (p.weighted && (p.method == MEAN || p.method == SUM)) {
    return reduce_weighted(p.method, fr, p, col, n, lo, hi);
  }
  return reduce_sorted_range(p.method, col, n, lo, hi);
}

// Mean, sum, min or max of the valid values of one pixel without order statistics: one pass,
// weighted Welford/West updates in float64 (exact to float64 rounding, no second read).
SK_HD PixelResult accumulate_pixel(const FrameView& fr, const CombineParams& p) {
  double wsum = 0.0, w2sum = 0.0, mean = 0.0, ssd = 0.0;
  float vmin = f32_inf(), vmax = -f32_inf();
  int n = 0;
  for (int k = 0; k < fr.nf; ++k) {
    float raw = fr.raw(k);
    float v = mul_add_f32(raw, fr.scale[k], fr.zero[k]);
    if (!is_valid(raw, v, p)) continue;
    ++n;
    vmin = v < vmin ? v : vmin;
    vmax = v > vmax ? v : vmax;
    double w = fr.weights[k];
    if (w == 0.0) continue;
    double x = (double)v;
    wsum += w;
    w2sum += w * w;
    double d = x - mean;
    mean += (w / wsum) * d;
    ssd += w * d * (x - mean);
  }
  if (n == 0) return empty_result();
  double swx = (wsum > 0.0) ? mean * wsum : 0.0;
  return moments_to_result(p.method, n, wsum, w2sum, swx, ssd, (double)vmin, (double)vmax);
}

}  // namespace sk
