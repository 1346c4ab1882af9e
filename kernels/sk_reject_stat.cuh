// skystack kernels: the statistical rejections (generalized ESD, IRAF ccdclip and pclip) on a
// pixel's sorted valid values, written once for host and device against the column interface of
// sk_pixel.cuh (at, count_lt, count_gt, sum). Each returns the kept range [lo, hi) of the n sorted
// values. Definitions, conventions and defaults: skystack/backends/cpu/rejections_stat.py (the
// CPU backend's Numba version, which gives the same ranges up to float64 rounding of the sums).
#pragma once

#include "sk_common.cuh"

// The t quantile is called once per ESD step with scalars only: as a real call on the device it
// keeps its many float64 temporaries out of the warp kernel's register budget (inlined, the
// 64-item warp kernel spilled).
#if defined(__CUDACC__)
#define SK_HD_CALL __host__ __device__ __noinline__
#else
#define SK_HD_CALL inline
#endif

namespace sk {

// Column types whose kernel has no registers to spare for ccdclip's loop: combine.cu sets it for
// the 64-item warp kernel (1025..2048 frames), which then compiles ccdclip out; the GPU backend
// refuses ccdclip for that many frames (skystack.backends.gpu.kernels.CCDCLIP_MAX_GPU_FRAMES).
template <class Col>
struct NoCcdclip {
  static constexpr bool value = false;
};

// Lower-tail standard normal quantile of p in (0, 1): Acklam's rational approximation.
SK_HD double normal_quantile(double p) {
  const double a0 = -3.969683028665376e+01, a1 = 2.209460984245205e+02,
               a2 = -2.759285104469687e+02, a3 = 1.383577518672690e+02,
               a4 = -3.066479806614716e+01, a5 = 2.506628277459239e+00;
  const double b0 = -5.447609879822406e+01, b1 = 1.615858368580409e+02,
               b2 = -1.556989798598866e+02, b3 = 6.680131188771972e+01,
               b4 = -1.328068155288572e+01;
  const double c0 = -7.784894002430293e-03, c1 = -3.223964580411365e-01,
               c2 = -2.400758277161838e+00, c3 = -2.549671010177264e+00,
               c4 = 4.374664141464968e+00, c5 = 2.938163982698783e+00;
  const double d0 = 7.784695709041462e-03, d1 = 3.224671290700398e-01,
               d2 = 2.445134137142996e+00, d3 = 3.754408661907416e+00;
  const double p_low = 0.02425;
  if (p < p_low || p > 1.0 - p_low) {
    double q = sqrt(-2.0 * log(p < p_low ? p : 1.0 - p));
    double x = (((((c0 * q + c1) * q + c2) * q + c3) * q + c4) * q + c5) /
               ((((d0 * q + d1) * q + d2) * q + d3) * q + 1.0);
    return p < p_low ? x : -x;
  }
  double q = p - 0.5;
  double r = q * q;
  return (((((a0 * r + a1) * r + a2) * r + a3) * r + a4) * r + a5) * q /
         (((((b0 * r + b1) * r + b2) * r + b3) * r + b4) * r + 1.0);
}

// t > 0 with P(|T| > t) = p for Student's t with df >= 1 degrees of freedom: Hill's (1970,
// CACM algorithm 396) approximation, exact for df 1 and 2.
SK_HD double student_t_two_tailed(double p, int df) {
  const double pi = 3.14159265358979323846;
  if (df == 1) {
    double h = p * (0.5 * pi);
    return cos(h) / sin(h);
  }
  if (df == 2) return sqrt(2.0 / (p * (2.0 - p)) - 2.0);
  double n = (double)df;
  double a = 1.0 / (n - 0.5);
  double b = 48.0 / (a * a);
  double c = ((20700.0 * a / b - 98.0) * a - 16.0) * a + 96.36;
  double d = ((94.5 / (b + c) - 3.0) / b + 1.0) * sqrt(a * 0.5 * pi) * n;
  double x = d * p;
  double y = pow(x, 2.0 / n);
  if (y > 0.05 + a) {
    // Asymptotic inverse expansion about the normal quantile.
    x = normal_quantile(0.5 * p);
    y = x * x;
    if (df < 5) c = c + 0.3 * (n - 4.5) * (x + 0.6);
    c = (((0.05 * d * x - 5.0) * x - 7.0) * x - 2.0) * x + b + c;
    y = (((((0.4 * y + 6.3) * y + 36.0) * y + 94.5) / c - y - 3.0) / b + 1.0) * x;
    y = a * y * y;
    y = expm1(y);
  } else {
    y = ((1.0 / (((n + 6.0) / (n * y) - 0.089 * d - 0.822) * (n + 2.0) * 3.0) +
          0.5 / (n + 4.0)) * y - 1.0) * (n + 1.0) / (n + 2.0) + 1.0 / y;
  }
  return sqrt(n * y);
}

// Rosner's critical value lambda_i for step i (from 1) of n values at significance alpha.
SK_HD_CALL double esd_lambda(int n, int i, double alpha) {
  int m = n - i;
  double t = student_t_two_tailed(alpha / (double)(m + 1), m - 1);
  return (double)m * t / sqrt(((double)(m - 1) + t * t) * (double)(m + 1));
}

SK_HD int stat_clamp(int x, int lo, int hi) { return x < lo ? lo : (x > hi ? hi : x); }

template <class Col>
SK_HD double stat_median(const Col& col, int a, int b) {
  int m = b - a;
  return 0.5 * ((double)col.at(a + ((m - 1) >> 1)) + (double)col.at(a + (m >> 1)));
}

// Generalized ESD test: at most min(floor(max_frac n), n - 2) outliers, each step removing the
// value farthest from the mean of those left (the highest on a tie), sample std (ddof 1).
template <class Col>
SK_HD void esd_range(const Col& col, int n, const CombineParams& p, int* lo, int* hi) {
  int r = (int)floor_f64(p.esd_max_frac * (double)n);
  r = r < n - 2 ? r : n - 2;
  *lo = 0;
  *hi = n;
  if (r < 1) return;
  double mean = col.sum(0, n) / (double)n;
  double m2 = col.ssd(0, n, mean);
  int a = 0, b = n;
  for (int i = 1; i <= r; ++i) {
    int m = b - a;
    double sd = sqrt(m2 / (double)(m - 1));
    double xlo = (double)col.at(a);
    double xhi = (double)col.at(b - 1);
    double dlo = mean - xlo;
    double dhi = xhi - mean;
    double x, dev;
    if (dhi >= dlo) { x = xhi; dev = dhi; --b; } else { x = xlo; dev = dlo; ++a; }
    double big_r = sd > 0.0 ? dev / sd : 0.0;
    if (big_r > esd_lambda(n, i, p.esd_alpha)) { *lo = a; *hi = b; }
    // Remove x from the running mean and sum of squared deviations (Welford, backwards).
    double new_mean = (mean * (double)m - x) / (double)(m - 1);
    m2 = m2 - (x - mean) * (x - new_mean);
    m2 = m2 > 0.0 ? m2 : 0.0;
    mean = new_mean;
  }
}

// IRAF's CCD noise model at the normalised value c of frames normalised as raw * s0 + z0
// (read from the frames' scale and zero where needed: fewer registers held across the loop).
SK_HD double ccd_sigma(double c, const CombineParams& p, const float* scale,
                       const float* zero) {
  double s0 = (double)scale[0];
  double z0 = (double)zero[0];
  double raw = (c - z0) / s0;
  double rn = p.rdnoise / p.gain;
  double sn = p.snoise * raw;
  return fabs(s0) * sqrt(rn * rn + (raw > 0.0 ? raw : 0.0) / p.gain + sn * sn);
}

// IRAF's ccdclip, iterated until a round rejects nothing; a round that would reject every value
// is not applied.
template <class Col>
SK_HD void ccdclip_range(const Col& col, int n, const CombineParams& p, const float* scale,
                         const float* zero, int* lo, int* hi) {
  int a = 0, b = n;
  bool first = true;
  while (n >= 2) {
    int m = b - a;
    double c;
    if (p.use_median) {
      c = stat_median(col, a, b);
    } else {
      // IRAF's first average leaves out the lowest and highest value.
      int ea = (first && m >= 3) ? a + 1 : a;
      int eb = (first && m >= 3) ? b - 1 : b;
      c = col.sum(ea, eb) / (double)(eb - ea);
    }
    double sig = ccd_sigma(c, p, scale, zero);
    int na = stat_clamp(col.count_lt(c - p.sigma_lo * sig), a, b);
    int nb = stat_clamp(n - col.count_gt(c + p.sigma_hi * sig), na, b);
    if (nb - na == m || nb == na) break;
    a = na;
    b = nb;
    first = false;
  }
  *lo = a;
  *hi = b;
}

// How many values beside the median pixel IRAF's percentile pixel lies, from all nf frames.
SK_HD int pclip_rank(double pclip, int nf) {
  double ap = fabs(pclip);
  if (ap >= 1.0) return (int)ap;
  int beside = pclip < 0.0 ? (nf - 1) / 2 : nf - 1 - nf / 2;
  return (int)floor_f64(ap * (double)beside + 0.5);
}

// IRAF's pclip (not iterated): spread = |median - percentile pixel|.
template <class Col>
SK_HD void pclip_range(const Col& col, int n, const CombineParams& p, int nf, int* lo, int* hi) {
  bool down = p.pclip < 0.0;
  int lo_mid = (n - 1) >> 1;
  int hi_mid = n >> 1;
  int beside = down ? lo_mid : n - 1 - hi_mid;
  *lo = 0;
  *hi = n;
  if (beside < 1) return;
  int k = stat_clamp(pclip_rank(p.pclip, nf), 1, beside);
  double med = stat_median(col, 0, n);
  double xp = (double)col.at(down ? lo_mid - k : hi_mid + k);
  double spread = fabs(med - xp);
  int a = stat_clamp(col.count_lt(med - p.sigma_lo * spread), 0, n);
  *lo = a;
  *hi = stat_clamp(n - col.count_gt(med + p.sigma_hi * spread), a, n);
}

}  // namespace sk
