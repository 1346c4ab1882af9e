// skystack kernels: FITS pixel decoding (byte order, BZERO/BSCALE, BLANK) on host or device.
//
// Raw tiles are shipped to the GPU as they are stored on disk (big-endian; 16-bit data stays two
// bytes) and decoded here. The arithmetic matches the CPU reader (skystack/io/reader.py), which
// follows NumPy's promotion rules:
//   * BSCALE = 1, BZERO = 0: the stored value converted to float32 (round to nearest);
//   * 8/16-bit integers with BSCALE = 1 and an integral BZERO: float32(raw) + float32(BZERO);
//   * other integers and float64: raw * BSCALE + BZERO in float64, rounded once to float32;
//   * float32 with scaling: float32 arithmetic (NumPy keeps float32 with Python-float scalars);
//   * integer pixels equal to BLANK become NaN (before scaling).
#pragma once

#include "sk_common.cuh"

namespace sk {

// Storage kinds of a staged frame (skystack/backends/gpu/staging.py mirrors these codes).
enum Kind { K_U8 = 0, K_I16 = 1, K_I32 = 2, K_I64 = 3, K_F32 = 4, K_F64 = 5, K_NATIVE_F32 = 6 };

SK_HD int kind_itemsize(int kind) {
  switch (kind) {
    case K_U8: return 1;
    case K_I16: return 2;
    case K_I32: return 4;
    case K_I64: return 8;
    case K_F32: return 4;
    case K_F64: return 8;
    default: return 4;
  }
}

SK_HD unsigned long long load_be(const unsigned char* p, int nbytes) {
  unsigned long long x = 0;
  for (int b = 0; b < nbytes; ++b) x = (x << 8) | (unsigned long long)p[b];
  return x;
}

struct DecodeSpec {
  int kind;
  double bscale;
  double bzero;
  long long blank;
  int has_blank;
};

// Pixel i of a staged frame whose bytes start at p.
SK_HD float decode_pixel(const unsigned char* p, long long i, const DecodeSpec& s) {
  const bool unscaled = s.bscale == 1.0 && s.bzero == 0.0;
  if (s.kind == K_NATIVE_F32) {
    union { unsigned int u; float f; } x;
    const unsigned char* q = p + 4 * i;
    x.u = (unsigned int)q[0] | ((unsigned int)q[1] << 8) | ((unsigned int)q[2] << 16) |
          ((unsigned int)q[3] << 24);
    return x.f;
  }
  if (s.kind == K_F32) {
    union { unsigned int u; float f; } x;
    x.u = (unsigned int)load_be(p + 4 * i, 4);
    if (unscaled) return x.f;
    return mul_add_f32(x.f, (float)s.bscale, (float)s.bzero);
  }
  if (s.kind == K_F64) {
    union { unsigned long long u; double d; } x;
    x.u = load_be(p + 8 * i, 8);
    if (unscaled) return (float)x.d;
    return (float)mul_add_f64(x.d, s.bscale, s.bzero);
  }
  long long r;
  if (s.kind == K_U8) r = (long long)p[i];
  else if (s.kind == K_I16) r = (long long)(short)(unsigned short)load_be(p + 2 * i, 2);
  else if (s.kind == K_I32) r = (long long)(int)(unsigned int)load_be(p + 4 * i, 4);
  else r = (long long)load_be(p + 8 * i, 8);
  if (s.has_blank && r == s.blank) return f32_nan();
  if (unscaled) {
    if (s.kind == K_I64) return (float)r;
    if (s.kind == K_I32) return (float)(int)r;
    return (float)(int)r;  // 8/16-bit: exact
  }
  if (s.kind <= K_I16 && s.bscale == 1.0 && floor_f64(s.bzero) == s.bzero) {
    return (float)(int)r + (float)s.bzero;
  }
  return (float)mul_add_f64((double)r, s.bscale, s.bzero);
}

}  // namespace sk
