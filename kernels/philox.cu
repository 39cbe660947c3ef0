// Keyed noise on the GPU: the same Philox words as src/rng.rs.
#include "common.cuh"
using namespace iwtvae;

// out[r, d] for rows r = b·k + s: uniforms (or, NORMAL, standard normals by
// Box–Muller on the word pairs) of (seed, stream, epoch; item = items[r / k],
// sample = sample0 + r % k, dim d). One thread per Philox block of 4 dims.
// (k0, k1, hi) are NoiseKey's words: [seed lo, seed hi] and (stream << 24) | epoch.
template <bool NORMAL>
__device__ __forceinline__ void philox_fill(float* out, const uint32_t* items, int rows, int k, int sample0, int dims,
                                            unsigned k0, unsigned k1, unsigned hi) {
  int blocks = (dims + 3) / 4;
  int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= rows * blocks) return;
  int r = t / blocks, j = t % blocks;
  uint4 w = philox4x32_10(make_uint4((uint32_t)j, (uint32_t)(sample0 + r % k), items[r / k], hi), make_uint2(k0, k1));
  float v[4];
  if constexpr (NORMAL) {
    float2 a = normal_pair(w.x, w.y), b = normal_pair(w.z, w.w);
    v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
  } else {
    v[0] = uniform_from_u32(w.x), v[1] = uniform_from_u32(w.y), v[2] = uniform_from_u32(w.z),
    v[3] = uniform_from_u32(w.w);
  }
  for (int q = 0; q < 4 && 4 * j + q < dims; ++q) out[(size_t)r * dims + 4 * j + q] = v[q];
}

extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    philox_uniforms(float* out, const uint32_t* items, int rows, int k, int sample0, int dims, unsigned k0, unsigned k1,
                    unsigned hi) {
  philox_fill<false>(out, items, rows, k, sample0, dims, k0, k1, hi);
}

extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    philox_normals(float* out, const uint32_t* items, int rows, int k, int sample0, int dims, unsigned k0, unsigned k1,
                   unsigned hi) {
  philox_fill<true>(out, items, rows, k, sample0, dims, k0, k1, hi);
}

// Training targets x [B, D] of the images items[0..B) from the dataset's
// bytes [n, D]: byte/255 (continuous) or, dynamically binarized, 1 where
// uniform(item, sample 0, dim d) < byte/255, as src/data/dataset.rs.
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    philox_targets(const uint8_t* images, const uint32_t* items, float* x, int B, int D, int binarize, unsigned k0,
                   unsigned k1, unsigned hi) {
  int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= B * D) return;
  int b = t / D, d = t % D;
  uint32_t item = items[b];
  float v = (float)images[(size_t)item * D + d] / 255.0f;
  if (binarize) {
    uint4 w = philox4x32_10(make_uint4((uint32_t)(d / 4), 0u, item, hi), make_uint2(k0, k1));
    uint32_t ws[4] = {w.x, w.y, w.z, w.w};
    v = uniform_from_u32(ws[d % 4]) < v ? 1.0f : 0.0f;
  }
  x[t] = v;
}
