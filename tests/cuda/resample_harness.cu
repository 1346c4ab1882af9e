// Host build of the GPU reprojection code (kernels/sk_resample.cuh), for tests without a GPU.
//
// sk_host_reproject_staged runs, for every frame and pixel of a staged tile, exactly what the
// kernel reproject_tile<INTERP, FLUX> of kernels/reproject.cu runs (same table decoding, same
// per-pixel function); the other entry points expose the pieces (coordinate map, sampling at
// given coordinates, coverage). The tests compare them with reproject and with the CPU backend.
#include "sk_common.cuh"
#include "sk_resample.cuh"

namespace {

template <int INTERP, int FLUX>
void reproject_frame(const sk::NodeTile& t, const sk::FrameBand& b, int edge_order,
                     float* plane) {
  for (int r = 0; r < t.rows; ++r) {
    for (int c = 0; c < t.cols; ++c) {
      plane[(long long)r * t.cols + c] = sk::reproject_pixel<INTERP, FLUX>(t, b, r, c, edge_order);
    }
  }
}

}  // namespace

extern "C" void sk_host_reproject_staged(const unsigned char* staged, int nf, int rows, int cols,
                                         int node_cols, int pr, int pc, long long off_start_r,
                                         long long off_start_c, long long off_w_r,
                                         long long off_w_c, int edge_order, int interp,
                                         int flux, float* block) {
  const sk::NodeTile t = sk::tile_from_staged(staged, rows, cols, node_cols, pr, pc, off_start_r,
                                              off_start_c, off_w_r, off_w_c);
  const long long npix = (long long)rows * cols;
  for (int k = 0; k < nf; ++k) {
    float* plane = block + (long long)k * npix;
    if (!sk::frame_covers(staged, k)) {
      for (long long i = 0; i < npix; ++i) plane[i] = sk::f32_nan();
      continue;
    }
    const sk::FrameBand b = sk::band_from_table(staged, k);
    switch (interp) {
      case sk::NEAREST:
        if (flux) reproject_frame<sk::NEAREST, 1>(t, b, edge_order, plane);
        else reproject_frame<sk::NEAREST, 0>(t, b, edge_order, plane);
        break;
      case sk::LANCZOS3:
        if (flux) reproject_frame<sk::LANCZOS3, 1>(t, b, edge_order, plane);
        else reproject_frame<sk::LANCZOS3, 0>(t, b, edge_order, plane);
        break;
      case sk::LANCZOS4:
        if (flux) reproject_frame<sk::LANCZOS4, 1>(t, b, edge_order, plane);
        else reproject_frame<sk::LANCZOS4, 0>(t, b, edge_order, plane);
        break;
      default:
        if (flux) reproject_frame<sk::BILINEAR, 1>(t, b, edge_order, plane);
        else reproject_frame<sk::BILINEAR, 0>(t, b, edge_order, plane);
    }
  }
}

// Coordinates of every tile pixel from node maps and tables given as separate arrays.
extern "C" void sk_host_map(const int* start_r, const int* start_c, const double* w_r,
                            const double* w_c, int rows, int cols, int node_cols, int pr, int pc,
                            const double* node_x, const double* node_y, double* out_x,
                            double* out_y) {
  sk::NodeTile t{rows, cols, node_cols, pr, pc, start_r, start_c, w_r, w_c};
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      const long long i = (long long)r * cols + c;
      sk::map_coords(t, node_x, node_y, r, c, &out_x[i], &out_y[i]);
    }
  }
}

// Samples of a whole image (height x width) at n given coordinates.
extern "C" void sk_host_sample(const float* image, int height, int width, const double* x,
                               const double* y, long long n, int interp, float* out) {
  sk::FrameBand b{image, width, 0, 0, height, width, height, width, nullptr, nullptr};
  for (long long i = 0; i < n; ++i) {
    switch (interp) {
      case sk::NEAREST: out[i] = sk::sample_pixel<sk::NEAREST>(b, x[i], y[i]); break;
      case sk::LANCZOS3: out[i] = sk::sample_pixel<sk::LANCZOS3>(b, x[i], y[i]); break;
      case sk::LANCZOS4: out[i] = sk::sample_pixel<sk::LANCZOS4>(b, x[i], y[i]); break;
      default: out[i] = sk::sample_pixel<sk::BILINEAR>(b, x[i], y[i]);
    }
  }
}

extern "C" void sk_host_coverage(const float* block, int nf, long long npix,
                                 const float* exptime, int* coverage, float* expmap) {
  for (long long i = 0; i < npix; ++i) {
    sk::coverage_pixel(block, nf, npix, i, exptime, &coverage[i], &expmap[i]);
  }
}
