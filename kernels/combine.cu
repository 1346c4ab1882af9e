// skystack kernels: per-pixel combination along the frame axis, and FITS decoding, on the GPU.
//
// Data layout: a tile is a frame-major float32 block (nf, npix) in C order, so threads that
// handle neighbouring pixels read neighbouring addresses (coalesced). Offsets are 64-bit.
// Outputs: image and standard error (float32) and the count of values used (int32), each npix.
//
// Three combine kernels, chosen by skystack/backends/gpu/kernels.py:
//   combine_accumulate      mean / sum / min / max without order statistics: thread per pixel,
//                           one streaming pass (weighted Welford in float64).
//   combine_small<NMAX>     order statistics for nf <= NMAX <= 64: thread per pixel, the values
//                           in registers, sorted by the generated network SortNet<NMAX>.
//   combine_warp<ITEMS, W>  order statistics for 64 < nf <= 32 * ITEMS: a warp per pixel, W
//                           pixels per block staged through shared memory with coalesced loads,
//                           a register bitonic sort across the warp (ITEMS values per lane).
// All three finish with the shared per-pixel code of sk_pixel.cuh.
#include "sk_common.cuh"
#include "sk_decode.cuh"
#include "sk_networks.cuh"
#include "sk_pixel.cuh"

// Every combine kernel's arguments: the block, its per-frame normalisation and weights, the
// combine's options as one struct passed by value (skystack/backends/kernel_interface.py builds
// its bytes from CombineOptions), and the outputs.
#define SK_COMBINE_ARGS                                                                       \
  const float *__restrict__ block, int nf, long long npix, const float *__restrict__ scale, \
      const float *__restrict__ zero, const double *__restrict__ weights,                   \
      const sk::CombineParams params, float *__restrict__ out_img,                          \
      float *__restrict__ out_unc, int *__restrict__ out_cnt

namespace sk {

__device__ __forceinline__ void store(const PixelResult& r, long long pix, float* out_img,
                                      float* out_unc, int* out_cnt) {
  out_img[pix] = (float)r.value;
  out_unc[pix] = (float)r.uncertainty;
  out_cnt[pix] = r.count;
}

constexpr unsigned FULL_MASK = 0xffffffffu;

__device__ __forceinline__ int warp_sum_int(int x) {
#pragma unroll
  for (int s = 16; s > 0; s >>= 1) x += __shfl_xor_sync(FULL_MASK, x, s);
  return __shfl_sync(FULL_MASK, x, 0);
}

__device__ __forceinline__ double warp_sum_f64(double x) {
#pragma unroll
  for (int s = 16; s > 0; s >>= 1) x += __shfl_xor_sync(FULL_MASK, x, s);
  // The butterfly gives every lane the same bits (each step adds the same two operands), but
  // the rejection logic must see warp-uniform values, so make that explicit.
  return __shfl_sync(FULL_MASK, x, 0);
}

// A sorted column spread over a warp in blocked order: lane l holds ranks [l*ITEMS, (l+1)*ITEMS).
// Every method is called with warp-uniform arguments and returns warp-uniform results.
template <int ITEMS>
struct WarpCol {
  const float* v;  // this lane's float[ITEMS]
  int n;
  int lane;

  __device__ __forceinline__ float at(int i) const {
    int owner = i / ITEMS;
    int r = i - owner * ITEMS;
    float x = v[0];
#pragma unroll
    for (int k = 1; k < ITEMS; ++k) x = (k == r) ? v[k] : x;
    return __shfl_sync(FULL_MASK, x, owner);
  }
  __device__ __forceinline__ int count_lt(double x) const {
    int c = 0;
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) c += (lane * ITEMS + k < n && (double)v[k] < x) ? 1 : 0;
    return warp_sum_int(c);
  }
  __device__ __forceinline__ int count_le(double x) const {
    int c = 0;
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) c += (lane * ITEMS + k < n && (double)v[k] <= x) ? 1 : 0;
    return warp_sum_int(c);
  }
  __device__ __forceinline__ int count_gt(double x) const {
    int c = 0;
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) c += (lane * ITEMS + k < n && (double)v[k] > x) ? 1 : 0;
    return warp_sum_int(c);
  }
  __device__ __forceinline__ double sum(int lo, int hi) const {
    double s = 0.0;
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      int i = lane * ITEMS + k;
      s += (i >= lo && i < hi) ? (double)v[k] : 0.0;
    }
    return warp_sum_f64(s);
  }
  __device__ __forceinline__ double ssd(int lo, int hi, double mean) const {
    double s = 0.0;
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      int i = lane * ITEMS + k;
      double d = (double)v[k] - mean;
      s += (i >= lo && i < hi) ? d * d : 0.0;
    }
    return warp_sum_f64(s);
  }
  __device__ __forceinline__ double rank_sum(int lo, int hi) const {
    double s = 0.0;
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      int i = lane * ITEMS + k;
      s += (i >= lo && i < hi) ? (double)(i - lo) * (double)v[k] : 0.0;
    }
    return warp_sum_f64(s);
  }
  __device__ __forceinline__ double line_abs_dev(int lo, int hi, double alpha,
                                                 double beta) const {
    double s = 0.0;
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      int i = lane * ITEMS + k;
      double d = (double)v[k] - (alpha + beta * (double)(i - lo));
      s += (i >= lo && i < hi) ? (d < 0.0 ? -d : d) : 0.0;
    }
    return warp_sum_f64(s);
  }
};

// 64 values per lane: winsor and linfit would spill registers (choose_combine_kernel avoids it).
template <>
struct RunsIterativeSiril<WarpCol<64>> {
  static constexpr bool value = false;
};

// ccdclip's loop spills this kernel's registers (sk_reject_stat.cuh): compiled out.
template <>
struct NoCcdclip<WarpCol<64>> {
  static constexpr bool value = true;
};

// Bitonic sort of 32 * ITEMS values held ITEMS per lane, ascending in blocked order (element
// i = lane * ITEMS + r is v[r] of that lane). Stages whose partner distance j is below ITEMS swap
// within a lane's registers; the others exchange with lane ^ (j / ITEMS) by shuffles. Loops run on
// log2 counters with constant trip counts, so they unroll and every v[] index is a constant.
template <int ITEMS, int LOG_ITEMS>
__device__ __forceinline__ void warp_bitonic_sort(float (&v)[ITEMS], int lane) {
  constexpr int LOG_M = LOG_ITEMS + 5;
#pragma unroll
  for (int lk = 1; lk <= LOG_M; ++lk) {
    const int k = 1 << lk;
#pragma unroll
    for (int lj = lk - 1; lj >= 0; --lj) {
      const int j = 1 << lj;
      if (j >= ITEMS) {
        const int lane_mask = j / ITEMS;
#pragma unroll
        for (int r = 0; r < ITEMS; ++r) {
          const int i = lane * ITEMS + r;
          const float y = __shfl_xor_sync(FULL_MASK, v[r], lane_mask);
          const bool ascending = (i & k) == 0;
          const bool lower = (i & j) == 0;
          v[r] = (lower == ascending) ? fminf(v[r], y) : fmaxf(v[r], y);
        }
      } else {
#pragma unroll
        for (int r = 0; r < ITEMS; ++r) {
          const int rp = r ^ j;
          if (rp > r) {
            const int i = lane * ITEMS + r;
            const bool ascending = (i & k) == 0;
            const float a = v[r];
            const float b = v[rp];
            v[r] = ascending ? fminf(a, b) : fmaxf(a, b);
            v[rp] = ascending ? fmaxf(a, b) : fminf(a, b);
          }
        }
      }
    }
  }
}

}  // namespace sk

// Decode nf staged raw frames into a float32 block (nf, npix). grid.y indexes frames.
extern "C" __global__ void decode_frames(const unsigned char* __restrict__ staged,
                                         const long long* __restrict__ offsets,
                                         const int* __restrict__ kinds,
                                         const double* __restrict__ bscale,
                                         const double* __restrict__ bzero,
                                         const long long* __restrict__ blank,
                                         const int* __restrict__ has_blank, long long npix,
                                         float* __restrict__ out) {
  const int k = blockIdx.y;
  sk::DecodeSpec s;
  s.kind = kinds[k];
  s.bscale = bscale[k];
  s.bzero = bzero[k];
  s.blank = blank[k];
  s.has_blank = has_blank[k];
  const unsigned char* p = staged + offsets[k];
  float* dst = out + (long long)k * npix;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < npix;
       i += (long long)gridDim.x * blockDim.x) {
    dst[i] = sk::decode_pixel(p, i, s);
  }
}

extern "C" __global__ void combine_accumulate(SK_COMBINE_ARGS) {
  const sk::CombineParams p = params;
  for (long long pix = (long long)blockIdx.x * blockDim.x + threadIdx.x; pix < npix;
       pix += (long long)gridDim.x * blockDim.x) {
    sk::FrameView fr{block, npix, pix, scale, zero, weights, nf};
    sk::store(sk::accumulate_pixel(fr, p), pix, out_img, out_unc, out_cnt);
  }
}

template <int NMAX>
__global__ void combine_small(SK_COMBINE_ARGS) {
  const sk::CombineParams p = params;
  const float inf = sk::f32_inf();
  for (long long pix = (long long)blockIdx.x * blockDim.x + threadIdx.x; pix < npix;
       pix += (long long)gridDim.x * blockDim.x) {
    float v[NMAX];
    int n = 0;
#pragma unroll
    for (int k = 0; k < NMAX; ++k) {
      float x = inf;
      if (k < nf) {
        const float raw = block[(long long)k * npix + pix];
        const float val = sk::mul_add_f32(raw, scale[k], zero[k]);
        if (sk::is_valid(raw, val, p)) {
          x = val;
          ++n;
        }
      }
      v[k] = x;
    }
    sk::SortNet<NMAX>::sort(v);
    sk::RegCol<NMAX> col{v, n};
    sk::FrameView fr{block, npix, pix, scale, zero, weights, nf};
    sk::store(sk::combine_sorted_pixel(col, n, p, fr), pix, out_img, out_unc, out_cnt);
  }
}

// Dynamic shared memory: WARPS * (32 * ITEMS + 8) floats. The +8 pitch makes both the staging
// stores (8 pixels x 4 frames per warp) and the column reads free of bank conflicts.
template <int ITEMS, int LOG_ITEMS, int WARPS>
__global__ void combine_warp(SK_COMBINE_ARGS) {
  constexpr int M = 32 * ITEMS;
  constexpr int PITCH = M + 8;
  extern __shared__ float stage[];
  const sk::CombineParams p = params;
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const float inf = sk::f32_inf();
  const long long groups = (npix + WARPS - 1) / WARPS;
  for (long long g = blockIdx.x; g < groups; g += gridDim.x) {
    const long long p0 = g * WARPS;
    __syncthreads();  // the previous group's columns have been read
    for (int idx = threadIdx.x; idx < nf * WARPS; idx += blockDim.x) {
      const int k = idx / WARPS;
      const int w = idx - k * WARPS;
      const long long q = p0 + w;
      stage[w * PITCH + k] = (q < npix) ? block[(long long)k * npix + q] : 0.0f;
    }
    __syncthreads();
    const long long pix = p0 + warp;
    if (pix >= npix) continue;  // whole warp: the loop bound and both barriers stay uniform
    float v[ITEMS];
    int n = 0;
#pragma unroll
    for (int r = 0; r < ITEMS; ++r) {
      const int k = r * 32 + lane;  // striped load: conflict-free; the sort does not care
      float x = inf;
      if (k < nf) {
        const float raw = stage[warp * PITCH + k];
        const float val = sk::mul_add_f32(raw, scale[k], zero[k]);
        if (sk::is_valid(raw, val, p)) {
          x = val;
          ++n;
        }
      }
      v[r] = x;
    }
    n = sk::warp_sum_int(n);
    sk::warp_bitonic_sort<ITEMS, LOG_ITEMS>(v, lane);
    sk::WarpCol<ITEMS> col{v, n, lane};
    sk::FrameView fr{block, npix, pix, scale, zero, weights, nf};
    const sk::PixelResult r = sk::combine_sorted_pixel(col, n, p, fr);
    if (lane == 0) sk::store(r, pix, out_img, out_unc, out_cnt);
  }
}
