// Bilinear grid sampling (align_corners, border padding), forward and
// backward, one sample row per blockIdx.y; mirrors src/ops/grid_sample.rs.
#include "common.cuh"
using namespace iwtvae;

// out[r, p] = bilinear(c[r], xs[r, p], ys[r, p]); NaN for non-finite coordinates.
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    grid_sample_fwd(const float* c, const float* xs, const float* ys, float* out, int rows, int h, int w) {
  int d = h * w;
  int r = blockIdx.y;
  const float* cr = c + (size_t)r * d;
  for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < d; p += gridDim.x * blockDim.x) {
    size_t i = (size_t)r * d + p;
    Footprint f;
    bool ok = footprint(xs[i], ys[i], h, w, &f);
    float sx = 1.0f - f.tx, sy = 1.0f - f.ty;
    float v = cr[f.i00] * sx * sy + cr[f.i01] * f.tx * sy + cr[f.i10] * sx * f.ty + cr[f.i11] * f.tx * f.ty;
    out[i] = ok ? v : __int_as_float(0x7fc00000);
  }
}

// dc[r] += ∂/∂c (atomics: neighbouring output pixels share source pixels),
// dxs, dys overwritten (NaN for non-finite coordinates, nothing written to dc).
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    grid_sample_bwd(const float* c, const float* xs, const float* ys, const float* dout, float* dc, float* dxs,
                    float* dys, int rows, int h, int w) {
  int d = h * w;
  int r = blockIdx.y;
  const float* cr = c + (size_t)r * d;
  float* dcr = dc + (size_t)r * d;
  for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < d; p += gridDim.x * blockDim.x) {
    size_t i = (size_t)r * d + p;
    Footprint f;
    if (!footprint(xs[i], ys[i], h, w, &f)) {
      dxs[i] = dys[i] = __int_as_float(0x7fc00000);
      continue;
    }
    float g = dout[i], sx = 1.0f - f.tx, sy = 1.0f - f.ty;
    atomicAdd(dcr + f.i00, g * sx * sy);
    atomicAdd(dcr + f.i01, g * f.tx * sy);
    atomicAdd(dcr + f.i10, g * sx * f.ty);
    atomicAdd(dcr + f.i11, g * f.tx * f.ty);
    float c00 = cr[f.i00], c01 = cr[f.i01], c10 = cr[f.i10], c11 = cr[f.i11];
    dxs[i] = g * ((c01 - c00) * sy + (c11 - c10) * f.ty) * f.dix;
    dys[i] = g * ((c10 - c00) * sx + (c11 - c01) * f.tx) * f.diy;
  }
}
