// skystack kernels: reprojection of frames into a tile block on the GPU, and the tile's coverage.
//
// reproject_tile<INTERP, FLUX> fills, for every frame k (blockIdx.y) of one staged output tile,
// plane k of the frame-major float32 block (nf, rows * cols) that the combine kernels of
// combine.cu read next, so the resampled values never leave the GPU. Each thread maps a tile
// pixel through the frame's node maps (float64), samples the frame's band of input pixels
// (bilinear or nearest, reproject_interp's rules) and, with FLUX, multiplies by the pixel-area
// ratio. Frames whose footprint misses the tile get a NaN plane. The per-pixel code and the
// staged layout are in sk_resample.cuh (compiled for the host by tests/cuda/resample_harness.cu
// and compared with reproject and with the CPU backend there).
//
// coverage_expmap counts the finite values of each pixel of the block and sums the exposure
// times of those frames (COUNT and EXPMAP of a stack).
//
// Launch geometry (skystack/backends/gpu/device.py): blocks of RESAMPLE_THREADS threads over the
// tile's pixels (grid-stride), grid.y = frames. Threads of a warp take consecutive pixels of a
// tile row: they write consecutive addresses and read neighbouring input pixels and the same few
// node values (cached).
#include "sk_common.cuh"
#include "sk_resample.cuh"

template <int INTERP, int FLUX>
__global__ void reproject_tile(const unsigned char* __restrict__ staged, int rows, int cols,
                               int node_cols, int pr, int pc, long long off_start_r,
                               long long off_start_c, long long off_w_r, long long off_w_c,
                               int edge_order, float* __restrict__ block) {
  const int k = blockIdx.y;
  const long long npix = (long long)rows * cols;
  float* plane = block + (long long)k * npix;
  const long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long stride = (long long)gridDim.x * blockDim.x;
  if (!sk::frame_covers(staged, k)) {
    const float nan = sk::f32_nan();
    for (long long pix = first; pix < npix; pix += stride) plane[pix] = nan;
    return;
  }
  const sk::NodeTile t = sk::tile_from_staged(staged, rows, cols, node_cols, pr, pc, off_start_r,
                                              off_start_c, off_w_r, off_w_c);
  const sk::FrameBand b = sk::band_from_table(staged, k);
  for (long long pix = first; pix < npix; pix += stride) {
    const int r = (int)(pix / cols);
    const int c = (int)(pix - (long long)r * cols);
    plane[pix] = sk::reproject_pixel<INTERP, FLUX>(t, b, r, c, edge_order);
  }
}

extern "C" __global__ void coverage_expmap(const float* __restrict__ block, int nf,
                                           long long npix, const float* __restrict__ exptime,
                                           int* __restrict__ coverage,
                                           float* __restrict__ expmap) {
  for (long long pix = (long long)blockIdx.x * blockDim.x + threadIdx.x; pix < npix;
       pix += (long long)gridDim.x * blockDim.x) {
    int n;
    float e;
    sk::coverage_pixel(block, nf, npix, pix, exptime, &n, &e);
    coverage[pix] = n;
    expmap[pix] = e;
  }
}
