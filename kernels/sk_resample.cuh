// skystack kernels: per-pixel reprojection (coordinate map, bilinear / nearest sampling, pixel
// area ratio), written once for host and device.
//
// The rules are those of the CPU path, which follows reproject.reproject_interp:
//   skystack/regrid/pixmap.py   NodeMap / _interp_map: input coordinates interpolated from coarse
//                               node maps (separable 4-point Lagrange, rows first, then columns)
//   skystack/regrid/interp.py   _snap, bilinear, nearest, lanczos_band, pixel_area_ratio
// Conventions: 0-based pixel coordinates, pixel centres at integers, x along columns and y along
// rows, NaN = no data. Coordinates are float64 (float32 resolves only ~5e-4 px at x ~ 9000).
//
// Bit-for-bit agreement with the CPU: every float64 product and sum is rounded on its own
// (dmul/dadd/dsub below), in the order of the CPU code. nvcc and NVRTC contract a * b + c into
// a fused multiply-add by default, which rounds once and would move coordinates by an ulp, and
// an ulp can flip a window at a pixel edge; Numba and NumPy never fuse.
//
// Staged layout of one output tile (skystack/backends/gpu/stack_streaming.py packs it): a byte
// buffer starting with one int64 row of TABLE_FIELDS per frame (the T_* indices), then the
// tile's interpolation tables and, per frame, its node maps (float64, node_rows x node_cols
// each) and its band of input pixels (float32, row-major, pitch = band cols).
#pragma once

#include "sk_common.cuh"

namespace sk {

// Per-frame table columns (mirrored in stack_streaming.py).
enum TableField {
  T_FLAGS = 0,   // bit 0: the frame may cover the tile (else its plane is all NaN)
  T_BAND = 1,    // byte offset of the band of input pixels
  T_ROW0 = 2,    // the band holds rows [row0, row0 + rows) ...
  T_COL0 = 3,    // ... and columns [col0, col0 + cols) of the frame
  T_ROWS = 4,
  T_COLS = 5,
  T_HEIGHT = 6,  // the whole frame's shape: snapping (rule 1) uses it
  T_WIDTH = 7,
  T_NODE_X = 8,  // byte offsets of the node maps (float64, node_rows x node_cols each)
  T_NODE_Y = 9,
  TABLE_FIELDS = 10
};

// Codes of the INTERP template argument (stack_streaming.INTERP_CODES mirrors them).
enum Interp { BILINEAR = 0, NEAREST = 1, LANCZOS3 = 2, LANCZOS4 = 3 };

// Rounded-once float64 arithmetic (see the file comment). The host build stores the product
// through a volatile so that no host compiler fuses it either.
SK_HD double dmul(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  volatile double t = a * b;
  return t;
#endif
}

SK_HD double dadd(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

SK_HD double dsub(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}

SK_HD bool is_nan_f64(double x) { return !(x == x); }

// The interpolation tables of one output tile, shared by every frame (one grid, one node step).
struct NodeTile {
  int rows;             // tile shape (output rows, cols)
  int cols;
  int node_cols;        // row pitch of the node maps
  int pr;               // nodes per window along rows / columns (1..4)
  int pc;
  const int* start_r;   // per tile row: first node row of its window, relative to the node maps
  const int* start_c;   // per tile column: first node column
  const double* w_r;    // [rows][pr] Lagrange weights
  const double* w_c;    // [cols][pc]
};

// One frame as the kernel sees it: its band of input pixels and its node maps. Band pixel
// (i, j) is frame pixel (row0 + i, col0 + j), stored at pix[i * pitch + j].
struct FrameBand {
  const float* pix;
  long long pitch;
  int row0;
  int col0;
  int rows;
  int cols;
  int height;           // whole frame
  int width;
  const double* node_x;
  const double* node_y;
};

// The tile tables of a staged tile: the launch's scalars and byte offsets into the buffer.
SK_HD NodeTile tile_from_staged(const unsigned char* staged, int rows, int cols, int node_cols,
                                int pr, int pc, long long off_start_r, long long off_start_c,
                                long long off_w_r, long long off_w_c) {
  NodeTile t;
  t.rows = rows;
  t.cols = cols;
  t.node_cols = node_cols;
  t.pr = pr;
  t.pc = pc;
  t.start_r = reinterpret_cast<const int*>(staged + off_start_r);
  t.start_c = reinterpret_cast<const int*>(staged + off_start_c);
  t.w_r = reinterpret_cast<const double*>(staged + off_w_r);
  t.w_c = reinterpret_cast<const double*>(staged + off_w_c);
  return t;
}

// The frame k of a staged tile (layout in the file comment).
SK_HD FrameBand band_from_table(const unsigned char* staged, int k) {
  const long long* t = reinterpret_cast<const long long*>(staged) + (long long)k * TABLE_FIELDS;
  FrameBand b;
  b.pix = reinterpret_cast<const float*>(staged + t[T_BAND]);
  b.row0 = (int)t[T_ROW0];
  b.col0 = (int)t[T_COL0];
  b.rows = (int)t[T_ROWS];
  b.cols = (int)t[T_COLS];
  b.pitch = t[T_COLS];
  b.height = (int)t[T_HEIGHT];
  b.width = (int)t[T_WIDTH];
  b.node_x = reinterpret_cast<const double*>(staged + t[T_NODE_X]);
  b.node_y = reinterpret_cast<const double*>(staged + t[T_NODE_Y]);
  return b;
}

SK_HD bool frame_covers(const unsigned char* staged, int k) {
  const long long* t = reinterpret_cast<const long long*>(staged) + (long long)k * TABLE_FIELDS;
  return (t[T_FLAGS] & 1) != 0;
}

// Input coordinates (x, y) of tile pixel (r, c): pixmap._interp_map's arithmetic, one pixel.
// Rows first: t_m = sum_k w_r[r][k] * node[s_r + k][s_c + m], accumulated from 0.0 as the CPU
// does; then columns: for four nodes ((w0 t0 + w1 t1) + w2 t2) + w3 t3 (the CPU's unrolled
// case), otherwise accumulated from 0.0. Any NaN node in the window gives NaN.
SK_HD void map_coords(const NodeTile& t, const double* node_x, const double* node_y, int r,
                      int c, double* x, double* y) {
  const int sr = t.start_r[r];
  const int sc = t.start_c[c];
  const double* wr = t.w_r + (long long)r * t.pr;
  const double* wc = t.w_c + (long long)c * t.pc;
  double tx[4], ty[4];
#pragma unroll
  for (int m = 0; m < 4; ++m) {
    double ax = 0.0, ay = 0.0;
    if (m < t.pc) {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (k < t.pr) {
          const long long i = (long long)(sr + k) * t.node_cols + (sc + m);
          ax = dadd(ax, dmul(wr[k], node_x[i]));
          ay = dadd(ay, dmul(wr[k], node_y[i]));
        }
      }
    }
    tx[m] = ax;
    ty[m] = ay;
  }
  if (t.pc == 4) {
    *x = dadd(dadd(dadd(dmul(wc[0], tx[0]), dmul(wc[1], tx[1])), dmul(wc[2], tx[2])),
              dmul(wc[3], tx[3]));
    *y = dadd(dadd(dadd(dmul(wc[0], ty[0]), dmul(wc[1], ty[1])), dmul(wc[2], ty[2])),
              dmul(wc[3], ty[3]));
  } else {
    double ax = 0.0, ay = 0.0;
#pragma unroll
    for (int m = 0; m < 4; ++m) {
      if (m < t.pc) {
        ax = dadd(ax, dmul(wc[m], tx[m]));
        ay = dadd(ay, dmul(wc[m], ty[m]));
      }
    }
    *x = ax;
    *y = ay;
  }
}

// Rule 1 along an axis of n pixels: NaN when c is NaN, < -0.5 or >= n - 0.5; [-0.5, 0) snaps to
// 0 and [n - 1, n - 0.5) to n - 1 (interp._snap).
SK_HD double snap_coord(double c, int n) {
  if (!(c >= -0.5 && c < (double)n - 0.5)) return f64_nan();
  if (c < 0.0) return 0.0;
  if (c >= (double)(n - 1)) return (double)(n - 1);
  return c;
}

// Band pixel at frame pixel (row, col); NaN if the band does not hold it. The host packs bands
// that hold every window (stack_streaming.frame_regions), so the NaN never shows up in results;
// it only keeps a wrong band from reading out of bounds.
SK_HD double band_pixel(const FrameBand& b, int row, int col) {
  const int i = row - b.row0;
  const int j = col - b.col0;
  if (i < 0 || i >= b.rows || j < 0 || j >= b.cols) return f64_nan();
  return (double)b.pix[(long long)i * b.pitch + j];
}

// The 2x2 window along one axis of n pixels at snapped coordinate c: first pixel
// min(floor(c), n - 2), second pixel one further, weight c - first on the second. An axis of
// length 1 uses its only pixel twice with weight 0 (rule 4).
SK_HD void window_1d(double c, int n, int* i0, int* i1, double* t) {
  if (n == 1) {
    *i0 = 0;
    *i1 = 0;
    *t = 0.0;
    return;
  }
  int i = (int)floor_f64(c);
  i = i < n - 2 ? i : n - 2;
  *i0 = i;
  *i1 = i + 1;
  *t = dsub(c, (double)i);
}

// Bilinear sample (interp.bilinear): all four pixels of the window are multiplied even at zero
// weight, so a NaN in the window gives NaN.
SK_HD float sample_bilinear(const FrameBand& b, double x, double y) {
  const double cx = snap_coord(x, b.width);
  const double cy = snap_coord(y, b.height);
  if (is_nan_f64(cx) || is_nan_f64(cy)) return f32_nan();
  int x0, x1, y0, y1;
  double tx, ty;
  window_1d(cx, b.width, &x0, &x1, &tx);
  window_1d(cy, b.height, &y0, &y1, &ty);
  const double v00 = band_pixel(b, y0, x0);
  const double v01 = band_pixel(b, y0, x1);
  const double v10 = band_pixel(b, y1, x0);
  const double v11 = band_pixel(b, y1, x1);
  const double sx = dsub(1.0, tx);
  // (1 - ty) * (sx * v00 + tx * v01) + ty * (sx * v10 + tx * v11), as interp.bilinear.
  const double top = dadd(dmul(sx, v00), dmul(tx, v01));
  const double bottom = dadd(dmul(sx, v10), dmul(tx, v11));
  return (float)dadd(dmul(dsub(1.0, ty), top), dmul(ty, bottom));
}

// Nearest sample (interp.nearest): pixel floor(c + 0.5) after snapping, halves rounding up.
SK_HD float sample_nearest(const FrameBand& b, double x, double y) {
  const double cx = snap_coord(x, b.width);
  const double cy = snap_coord(y, b.height);
  if (is_nan_f64(cx) || is_nan_f64(cy)) return f32_nan();
  int i = (int)floor_f64(dadd(cx, 0.5));
  int j = (int)floor_f64(dadd(cy, 0.5));
  i = i < b.width - 1 ? i : b.width - 1;
  j = j < b.height - 1 ? j : b.height - 1;
  return (float)band_pixel(b, j, i);
}

// Normalised 1-D Lanczos-A weights of the 2A taps first - A + 1 .. first + A for a position t in
// [0, 1] past the window's first pixel (interp._lanczos_weights, same formula and order, so the
// same weights bit for bit; the CPU sums interior taps in another order, so samples agree to
// float32 rounding). Within 1e-12 px of a pixel centre the weight is all on that pixel.
// sin(pi m / A) and cos(pi m / A) of the taps' integer offsets m = A - 1 - k, k = 0 .. 2A - 1,
// as the host's libm rounds them (interp._lanczos_tables computes the same values).
template <int A> struct LanczosTable;
template <> struct LanczosTable<3> {
  SK_HD static double s(int k) {
    const double v[6] = {0.8660254037844387, 0.8660254037844386, 0.0, -0.8660254037844386,
                         -0.8660254037844387, -1.2246467991473532e-16};
    return v[k];
  }
  SK_HD static double c(int k) {
    const double v[6] = {-0.4999999999999998, 0.5000000000000001, 1.0, 0.5000000000000001,
                         -0.4999999999999998, -1.0};
    return v[k];
  }
};
template <> struct LanczosTable<4> {
  SK_HD static double s(int k) {
    const double v[8] = {0.7071067811865476, 1.0, 0.7071067811865475, 0.0, -0.7071067811865475,
                         -1.0, -0.7071067811865476, -1.2246467991473532e-16};
    return v[k];
  }
  SK_HD static double c(int k) {
    const double v[8] = {-0.7071067811865475, 6.123233995736766e-17, 0.7071067811865476, 1.0,
                         0.7071067811865476, 6.123233995736766e-17, -0.7071067811865475, -1.0};
    return v[k];
  }
};

// sin(phi) and cos(phi) for 0 <= phi <= pi / 3: interp._sin_cos_small's Taylor polynomials by
// Estrin's scheme, same coefficients and order (no sin/cos call, no fused operation).
SK_HD void sin_cos_small(double phi, double* s, double* c) {
  const double s0 = 1.0, s1 = -0.16666666666666666, s2 = 0.008333333333333333,
               s3 = -0.0001984126984126984, s4 = 2.7557319223985893e-06,
               s5 = -2.505210838544172e-08, s6 = 1.6059043836821613e-10,
               s7 = -7.647163731819816e-13;
  const double c0 = 1.0, c1 = -0.5, c2 = 0.041666666666666664, c3 = -0.001388888888888889,
               c4 = 2.48015873015873e-05, c5 = -2.755731922398589e-07,
               c6 = 2.08767569878681e-09, c7 = -1.1470745597729725e-11,
               c8 = 4.779477332387385e-14;
  const double p = dmul(phi, phi);
  const double p2 = dmul(p, p);
  const double p4 = dmul(p2, p2);
  const double s01 = dadd(s0, dmul(p, s1)), s23 = dadd(s2, dmul(p, s3));
  const double s45 = dadd(s4, dmul(p, s5)), s67 = dadd(s6, dmul(p, s7));
  const double c01 = dadd(c0, dmul(p, c1)), c23 = dadd(c2, dmul(p, c3));
  const double c45 = dadd(c4, dmul(p, c5)), c67 = dadd(c6, dmul(p, c7));
  const double vs = dadd(dadd(s01, dmul(p2, s23)), dmul(p4, dadd(s45, dmul(p2, s67))));
  const double vc = dadd(dadd(c01, dmul(p2, c23)),
                         dmul(p4, dadd(c45, dmul(p2, dadd(c67, dmul(p2, c8))))));
  *s = dmul(phi, vs);
  *c = vc;
}

template <int A>
SK_HD void lanczos_weights(double t, double* w) {
  const double pi = 3.141592653589793;
#pragma unroll
  for (int k = 0; k < 2 * A; ++k) w[k] = 0.0;
  if (t < 1e-12) {
    w[A - 1] = 1.0;
    return;
  }
  if (t > 1.0 - 1e-12) {
    w[A] = 1.0;
    return;
  }
  double sa, ca;
  sin_cos_small(dmul(pi, t) / (double)A, &sa, &ca);
  double total = 0.0;
#pragma unroll
  for (int k = 0; k < 2 * A; ++k) {
    const int m = A - 1 - k;
    const double d = dadd(t, (double)m);
    // (sa * cm + ca * sm) / (d * d), negated for odd m: the common factor A sin(pi t) / pi^2
    // of L(d) cancels in the normalisation (see interp._lanczos_weights)
    double v = dadd(dmul(sa, LanczosTable<A>::c(k)), dmul(ca, LanczosTable<A>::s(k))) /
               dmul(d, d);
    v = (m % 2 == 0) ? v : -v;
    w[k] = v;
    total = dadd(total, v);
  }
  const double inv = 1.0 / total;
#pragma unroll
  for (int k = 0; k < 2 * A; ++k) w[k] = dmul(w[k], inv);
}

// Clamped Lanczos-A sample (interp.lanczos_band): rule 1 and the bilinear window (its NaN rule
// and its value range for the clamp), taps outside the frame or NaN left out and the weights
// renormalised. A tap inside the frame but outside the band means the host packed too small a
// band: the pixel is NaN then (loudly wrong, never silently renormalised).
template <int A>
SK_HD float sample_lanczos(const FrameBand& b, double x, double y) {
  const double cx = snap_coord(x, b.width);
  const double cy = snap_coord(y, b.height);
  if (is_nan_f64(cx) || is_nan_f64(cy)) return f32_nan();
  int x0, x1, y0, y1;
  double tx, ty;
  window_1d(cx, b.width, &x0, &x1, &tx);
  window_1d(cy, b.height, &y0, &y1, &ty);
  const double v00 = band_pixel(b, y0, x0);
  const double v01 = band_pixel(b, y0, x1);
  const double v10 = band_pixel(b, y1, x0);
  const double v11 = band_pixel(b, y1, x1);
  if (is_nan_f64(dadd(dadd(dadd(v00, v01), v10), v11))) return f32_nan();
  const double lo = fmin(fmin(v00, v01), fmin(v10, v11));
  const double hi = fmax(fmax(v00, v01), fmax(v10, v11));
  double wx[2 * A], wy[2 * A];
  lanczos_weights<A>(dsub(cx, (double)x0), wx);
  lanczos_weights<A>(dsub(cy, (double)y0), wy);
  const int j_first = y0 - A + 1 > 0 ? y0 - A + 1 : 0;
  const int j_last = y0 + A < b.height - 1 ? y0 + A : b.height - 1;
  const int i_first = x0 - A + 1 > 0 ? x0 - A + 1 : 0;
  const int i_last = x0 + A < b.width - 1 ? x0 + A : b.width - 1;
  if (j_first < b.row0 || j_last >= b.row0 + b.rows || i_first < b.col0 ||
      i_last >= b.col0 + b.cols) {
    return f32_nan();
  }
  double acc = 0.0, wsum = 0.0;
  for (int j = j_first; j <= j_last; ++j) {
    const float* row = b.pix + (long long)(j - b.row0) * b.pitch - b.col0;
    double row_acc = 0.0, row_w = 0.0;
    for (int i = i_first; i <= i_last; ++i) {
      const double v = (double)row[i];
      if (!is_nan_f64(v)) {
        const double wi = wx[i - x0 + A - 1];
        row_acc = dadd(row_acc, dmul(wi, v));
        row_w = dadd(row_w, wi);
      }
    }
    const double wj = wy[j - y0 + A - 1];
    acc = dadd(acc, dmul(wj, row_acc));
    wsum = dadd(wsum, dmul(wj, row_w));
  }
  const double v = acc / wsum;
  return (float)(v < lo ? lo : (v > hi ? hi : v));
}

// The sample of one interpolation code (enum Interp).
template <int INTERP>
SK_HD float sample_pixel(const FrameBand& b, double x, double y) {
  if (INTERP == NEAREST) return sample_nearest(b, x, y);
  if (INTERP == LANCZOS3) return sample_lanczos<3>(b, x, y);
  if (INTERP == LANCZOS4) return sample_lanczos<4>(b, x, y);
  return sample_bilinear(b, x, y);
}

// numpy.gradient of the map along one axis of the tile at index i of n, unit spacing: central
// differences inside, one-sided ones of order edge_order (1 or 2) at the ends, with NumPy's
// coefficients and order of operations. f(j) evaluates the map at index j of that axis.
template <class F>
SK_HD void gradient_1d(const F& f, int i, int n, int edge_order, double* gx, double* gy) {
  double xa, ya, xb, yb, xc, yc;
  if (i > 0 && i < n - 1) {
    f(i + 1, &xa, &ya);
    f(i - 1, &xb, &yb);
    *gx = dsub(xa, xb) / 2.0;
    *gy = dsub(ya, yb) / 2.0;
  } else if (edge_order == 1) {
    // (f[1] - f[0]) / 1.0 and (f[-1] - f[-2]) / 1.0
    const int hi = (i == 0) ? 1 : n - 1;
    f(hi, &xa, &ya);
    f(hi - 1, &xb, &yb);
    *gx = dsub(xa, xb);
    *gy = dsub(ya, yb);
  } else if (i == 0) {
    // -1.5 f[0] + 2 f[1] - 0.5 f[2], summed left to right
    f(0, &xa, &ya);
    f(1, &xb, &yb);
    f(2, &xc, &yc);
    *gx = dadd(dadd(dmul(-1.5, xa), dmul(2.0, xb)), dmul(-0.5, xc));
    *gy = dadd(dadd(dmul(-1.5, ya), dmul(2.0, yb)), dmul(-0.5, yc));
  } else {
    // 0.5 f[-3] - 2 f[-2] + 1.5 f[-1]
    f(n - 3, &xa, &ya);
    f(n - 2, &xb, &yb);
    f(n - 1, &xc, &yc);
    *gx = dadd(dadd(dmul(0.5, xa), dmul(-2.0, xb)), dmul(1.5, xc));
    *gy = dadd(dadd(dmul(0.5, ya), dmul(-2.0, yb)), dmul(1.5, yc));
  }
}

struct AlongRows {
  const NodeTile* t; const double* nx; const double* ny; int c;
  SK_HD void operator()(int r, double* x, double* y) const { map_coords(*t, nx, ny, r, c, x, y); }
};

struct AlongCols {
  const NodeTile* t; const double* nx; const double* ny; int r;
  SK_HD void operator()(int c, double* x, double* y) const { map_coords(*t, nx, ny, r, c, x, y); }
};

// interp.pixel_area_ratio of the tile's map at (r, c): |dx/dc dy/dr - dx/dr dy/dc| from
// numpy.gradient over the tile (so a tile's border pixels use one-sided differences, as the CPU
// stack computes it per tile). edge_order is 2 when both tile sides are >= 3, else 1; tiles with
// a side of 1 cannot be differenced (the host refuses them).
SK_HD double area_ratio(const NodeTile& t, const double* node_x, const double* node_y, int r,
                        int c, int edge_order) {
  double dx_dr, dy_dr, dx_dc, dy_dc;
  gradient_1d(AlongRows{&t, node_x, node_y, c}, r, t.rows, edge_order, &dx_dr, &dy_dr);
  gradient_1d(AlongCols{&t, node_x, node_y, r}, c, t.cols, edge_order, &dx_dc, &dy_dc);
  return fabs(dsub(dmul(dx_dc, dy_dr), dmul(dx_dr, dy_dc)));
}

// The value of tile pixel (r, c) for one frame: map, sample and, with FLUX, scale by the pixel
// area ratio in float32 as the CPU stack does (values *= ratio.astype(float32)).
template <int INTERP, int FLUX>
SK_HD float reproject_pixel(const NodeTile& t, const FrameBand& b, int r, int c,
                            int edge_order) {
  double x, y;
  map_coords(t, b.node_x, b.node_y, r, c, &x, &y);
  float v = sample_pixel<INTERP>(b, x, y);
  if (FLUX && v == v) {  // NaN stays NaN: no need for the ratio's four extra map evaluations
    const float ratio = (float)area_ratio(t, b.node_x, b.node_y, r, c, edge_order);
    v = v * ratio;
  }
  return v;
}

// Coverage (finite resampled values) and exposure map (sum of the exposure times of the covering
// frames, float32, in frame order as the CPU stack adds them) of one pixel of a frame-major block.
SK_HD void coverage_pixel(const float* block, int nf, long long npix, long long pix,
                          const float* exptime, int* count, float* expmap) {
  int n = 0;
  float e = 0.0f;
  for (int k = 0; k < nf; ++k) {
    const float v = block[(long long)k * npix + pix];
    if ((v - v) == 0.0f) {  // finite: NaN and +-inf fail
      ++n;
      e = e + exptime[k];
    }
  }
  *count = n;
  *expmap = e;
}

}  // namespace sk
