// Host build of the GPU per-pixel algorithms (kernels/sk_*.cuh), for tests without a GPU.
//
// sk_host_combine runs, for every pixel, exactly the per-pixel code a GPU kernel runs:
//   path 0  accumulate_pixel                         (combine_accumulate)
//   path 1  SortNet<NMAX> + RegCol<NMAX> + combine_sorted_pixel   (combine_small<NMAX>)
//   path 2  sorted ArrayCol + combine_sorted_pixel   (the warp kernel's logic, any length)
// The tests compare its outputs with NumPy / astropy references.
#include <algorithm>
#include <vector>

#include "sk_common.cuh"
#include "sk_decode.cuh"
#include "sk_networks.cuh"
#include "sk_pixel.cuh"

namespace {

template <int NMAX>
sk::PixelResult small_path(const sk::FrameView& fr, const sk::CombineParams& p) {
  float v[NMAX];
  int n = 0;
  for (int k = 0; k < NMAX; ++k) {
    float x = sk::f32_inf();
    if (k < fr.nf) {
      float raw = fr.raw(k);
      float val = fr.value(k);
      if (sk::is_valid(raw, val, p)) { x = val; ++n; }
    }
    v[k] = x;
  }
  sk::SortNet<NMAX>::sort(v);
  sk::RegCol<NMAX> col{v, n};
  return sk::combine_sorted_pixel(col, n, p, fr);
}

sk::PixelResult array_path(const sk::FrameView& fr, const sk::CombineParams& p,
                           std::vector<float>& buf) {
  buf.clear();
  for (int k = 0; k < fr.nf; ++k) {
    float raw = fr.raw(k);
    float val = fr.value(k);
    if (sk::is_valid(raw, val, p)) buf.push_back(val);
  }
  std::sort(buf.begin(), buf.end());
  sk::ArrayCol col{buf.data(), (int)buf.size()};
  return sk::combine_sorted_pixel(col, (int)buf.size(), p, fr);
}

}  // namespace

// ``params`` points at the bytes of a kernel_interface.PARAMS_DTYPE record: the struct the GPU
// kernels get by value.
extern "C" int sk_host_combine(const float* block, int nf, long long npix, const float* scale,
                               const float* zero, const double* weights,
                               const sk::CombineParams* params, int path, int nmax,
                               float* out_img, float* out_unc, int* out_cnt) {
  const sk::CombineParams p = *params;
  std::vector<float> buf;
  for (long long pix = 0; pix < npix; ++pix) {
    sk::FrameView fr{block, npix, pix, scale, zero, weights, nf};
    sk::PixelResult r;
    if (path == 0) {
      r = sk::accumulate_pixel(fr, p);
    } else if (path == 1) {
      switch (nmax) {
        case 4: r = small_path<4>(fr, p); break;
        case 8: r = small_path<8>(fr, p); break;
        case 12: r = small_path<12>(fr, p); break;
        case 16: r = small_path<16>(fr, p); break;
        case 24: r = small_path<24>(fr, p); break;
        case 32: r = small_path<32>(fr, p); break;
        case 48: r = small_path<48>(fr, p); break;
        case 64: r = small_path<64>(fr, p); break;
        default: return -1;
      }
    } else {
      r = array_path(fr, p, buf);
    }
    out_img[pix] = (float)r.value;
    out_unc[pix] = (float)r.uncertainty;
    out_cnt[pix] = r.count;
  }
  return 0;
}

extern "C" void sk_host_decode(const unsigned char* staged, int kind, double bscale, double bzero,
                               long long blank, int has_blank, long long npix, float* out) {
  sk::DecodeSpec s{kind, bscale, bzero, blank, has_blank};
  for (long long i = 0; i < npix; ++i) out[i] = sk::decode_pixel(staged, i, s);
}

extern "C" void sk_host_sort(int nmax, float* v) {
  switch (nmax) {
    case 4: sk::SortNet<4>::sort(v); break;
    case 8: sk::SortNet<8>::sort(v); break;
    case 12: sk::SortNet<12>::sort(v); break;
    case 16: sk::SortNet<16>::sort(v); break;
    case 24: sk::SortNet<24>::sort(v); break;
    case 32: sk::SortNet<32>::sort(v); break;
    case 48: sk::SortNet<48>::sort(v); break;
    case 64: sk::SortNet<64>::sort(v); break;
  }
}

// Student t quantile of sk_reject_stat.cuh (t with P(|T| > t) = p), for the accuracy test.
extern "C" double sk_host_student_t(double p, int df) { return sk::student_t_two_tailed(p, df); }
