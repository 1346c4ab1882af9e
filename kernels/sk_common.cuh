// skystack kernels: definitions shared by every kernel and by the host test harness.
//
// Everything here compiles three ways: as CUDA device code through NVRTC (CuPy's RawModule), as
// device code through nvcc (CI compiles every kernel instantiation), and as plain host C++
// through nvcc (tests compare the per-pixel algorithms with NumPy references without a GPU).
// So: no standard headers under NVRTC, no device intrinsics outside `#ifdef __CUDA_ARCH__`.
#pragma once

#if defined(__CUDACC__)
#define SK_HD __host__ __device__ __forceinline__
#else
#define SK_HD inline
#endif

#if !defined(__CUDACC_RTC__)
#include <math.h>
#endif

// The codes (Method, Reject) and the run-time options (CombineParams) of a combine: generated
// from skystack/backends/kernel_interface.py, as the CPU backend reads them.
#include "sk_params.cuh"

namespace sk {

// MAD of a unit Gaussian is 1 / 1.482602218505602 (astropy's mad_std).
constexpr double MAD_TO_SIGMA = 1.482602218505602;
// SE(median) = sqrt(pi / 2) * sigma / sqrt(n) for Gaussian data; sigma from the IQR.
constexpr double MEDIAN_SE_FACTOR = 1.2533141373155001;
constexpr double IQR_TO_SIGMA = 1.3489795003921634;

SK_HD float f32_inf() {
  union { unsigned int u; float f; } x;
  x.u = 0x7f800000u;
  return x.f;
}

SK_HD float f32_nan() {
  union { unsigned int u; float f; } x;
  x.u = 0x7fc00000u;
  return x.f;
}

SK_HD double f64_inf() {
  union { unsigned long long u; double d; } x;
  x.u = 0x7ff0000000000000ull;
  return x.d;
}

SK_HD double f64_nan() {
  union { unsigned long long u; double d; } x;
  x.u = 0x7ff8000000000000ull;
  return x.d;
}

// a * b + c in float32, rounded after the product and after the sum: never fused, so the GPU
// normalises each value exactly as the CPU backend (NumPy/Numba float32 arithmetic) does.
SK_HD float mul_add_f32(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(__fmul_rn(a, b), c);
#else
  volatile float t = a * b;
  return t + c;
#endif
}

// The same in float64 (FITS BSCALE/BZERO on integer data).
SK_HD double mul_add_f64(double a, double b, double c) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(__dmul_rn(a, b), c);
#else
  volatile double t = a * b;
  return t + c;
#endif
}

SK_HD double sqrt_f64(double x) { return sqrt(x); }
SK_HD double floor_f64(double x) { return floor(x); }

// A combined pixel: value and standard error (NaN where count == 0) and the values used.
struct PixelResult {
  double value;
  double uncertainty;
  int count;
};

SK_HD PixelResult empty_result() {
  PixelResult r;
  r.value = f64_nan();
  r.uncertainty = f64_nan();
  r.count = 0;
  return r;
}

// Valid: finite after normalisation and, with range rejection, raw value inside the range.
// (v - v) == 0 is false for NaN and +-inf.
SK_HD bool is_valid(float raw, float v, const CombineParams& p) {
  bool finite = (v - v) == 0.0f;
  if (p.use_range) return finite && raw >= p.range_lo && raw <= p.range_hi;
  return finite;
}

// Combined value and standard error from weighted moments: v1 = sum w, v2 = sum w^2,
// swx = sum w x, ssd = sum w (x - mean)^2. The reliability-weighted variance
// s^2 = ssd / (v1 - v2 / v1) is the ddof = 1 variance for equal weights; SE(mean) = s sqrt(v2) / v1.
SK_HD PixelResult moments_to_result(int method, int n, double v1, double v2, double swx,
                                    double ssd, double vmin, double vmax) {
  PixelResult r;
  r.count = n;
  double mean = swx / v1;
  double s;
  if (n > 1) {
    s = (v1 * v1 > v2) ? sqrt_f64(ssd / (v1 - v2 / v1)) : 0.0;
  } else {
    s = f64_nan();
  }
  if (method == MEAN) {
    r.value = mean;
    r.uncertainty = s * sqrt_f64(v2) / v1;
  } else if (method == SUM) {
    r.value = swx;
    r.uncertainty = s * sqrt_f64(v2);
  } else if (method == MIN) {
    r.value = vmin;
    r.uncertainty = s;
  } else {
    r.value = vmax;
    r.uncertainty = s;
  }
  return r;
}

// The values of one pixel in frame order, as the combine kernels see them (frame-major block).
struct FrameView {
  const float* block;   // (nf, npix) float32, C order
  long long npix;
  long long pix;
  const float* scale;
  const float* zero;
  const double* weights;
  int nf;

  SK_HD float raw(int k) const { return block[(long long)k * npix + pix]; }
  SK_HD float value(int k) const { return mul_add_f32(raw(k), scale[k], zero[k]); }
};

}  // namespace sk
