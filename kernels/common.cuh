// Shared device helpers. Philox4x32-10 and the noise keying of src/rng.rs,
// bit for bit: the same counter layout and the same u32 words, so CPU and
// GPU agree exactly on every uniform (normals go through each device's own
// transcendental functions and agree to a few ulp).
//
//   key     = [seed lo, seed hi]
//   counter = [dim / 4, sample, item, (stream << 24) | (epoch & 0xFFFFFF)]
#pragma once
#include <stdint.h>

// A kernel's dynamic shared memory. The CPU emulator (crates/cuda-emu),
// which runs these kernels in CI, defines its own spelling first.
#ifndef IWTVAE_DYNAMIC_SHARED
#define IWTVAE_DYNAMIC_SHARED(type, name, align) extern __shared__ __align__(align) type name[]
#endif

#include "launch_shapes.h"

namespace iwtvae {

__device__ __forceinline__ uint4 philox4x32_10(uint4 c, uint2 k) {
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    if (round > 0) { k.x += W0; k.y += W1; }
    uint32_t hi0 = __umulhi(M0, c.x), lo0 = M0 * c.x;
    uint32_t hi1 = __umulhi(M1, c.z), lo1 = M1 * c.z;
    c = make_uint4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
  }
  return c;
}

// Uniform in [0, 1) with 24 random bits, exactly as src/rng.rs.
__device__ __forceinline__ float uniform_from_u32(uint32_t x) {
  return (float)(x >> 8) * (1.0f / 16777216.0f);
}

}  // namespace iwtvae

namespace iwtvae {

// Box-Muller on two words, as src/rng.rs::normal_pair (first word mapped to
// (0, 1] so the log never sees 0). Device transcendental functions: equal to
// the CPU's normals to a few ulp, not bit for bit (SPEC §3 asks uniforms only).
__device__ __forceinline__ float2 normal_pair(uint32_t a, uint32_t b) {
  float u1 = (float)((a >> 8) + 1u) * (1.0f / 16777216.0f);
  float u2 = uniform_from_u32(b);
  float r = sqrtf(-2.0f * logf(u1));
  float s, c;
  sincospif(2.0f * u2, &s, &c);
  return make_float2(r * c, r * s);
}

struct NoiseKey {
  uint2 key;
  uint32_t hi;
};

__device__ __forceinline__ NoiseKey noise_key(uint64_t seed, uint32_t stream, uint32_t epoch) {
  NoiseKey k;
  k.key = make_uint2((uint32_t)seed, (uint32_t)(seed >> 32));
  k.hi = (stream << 24) | (epoch & 0xFFFFFFu);
  return k;
}

__device__ __forceinline__ uint4 noise_block(NoiseKey k, uint32_t item, uint32_t sample, uint32_t block) {
  return philox4x32_10(make_uint4(block, sample, item, k.hi), k.key);
}

// Sum over a warp (all 32 lanes participate).
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The clamped bilinear footprint of src/ops/grid_sample.rs (align_corners,
// border padding). Returns false for a non-finite coordinate; indices are in
// range on every path.
struct Footprint {
  int i00, i01, i10, i11;
  float tx, ty, dix, diy;
};

__device__ __forceinline__ bool footprint(float xs, float ys, int h, int w, Footprint* f) {
  const float wm1 = (float)(w - 1), hm1 = (float)(h - 1);
  float rx = (xs + 1.0f) * 0.5f * wm1;
  float ry = (ys + 1.0f) * 0.5f * hm1;
  float ix = rx > 0.0f ? rx : 0.0f;  // NaN -> 0
  ix = ix < wm1 ? ix : wm1;
  float iy = ry > 0.0f ? ry : 0.0f;
  iy = iy < hm1 ? iy : hm1;
  int x0 = min((int)ix, w - 1), y0 = min((int)iy, h - 1);
  int x1 = min(x0 + 1, w - 1), y1 = min(y0 + 1, h - 1);
  f->i00 = y0 * w + x0;
  f->i01 = y0 * w + x1;
  f->i10 = y1 * w + x0;
  f->i11 = y1 * w + x1;
  f->tx = ix - (float)x0;
  f->ty = iy - (float)y0;
  f->dix = (rx > 0.0f && rx < wm1) ? 0.5f * wm1 : 0.0f;
  f->diy = (ry > 0.0f && ry < hm1) ? 0.5f * hm1 : 0.0f;
  return isfinite(xs) && isfinite(ys);
}

// θ of one sample as the warp reads it: xs = Σ_n B[n, j]·x(n), ys =
// Σ_n B[n, j]·y(n). ThetaRegs holds a compile-time count in registers,
// loaded once per sample (the evaluator's hot loop would otherwise load
// 2·nb values per pixel); ThetaAt reads a runtime count through a pointer
// (shared memory in the training kernels, or any nb the evaluator has no
// specialization for).
template <int NB>
struct ThetaRegs {
  float v[2 * NB];
  __device__ __forceinline__ explicit ThetaRegs(const float* th) {
#pragma unroll
    for (int n = 0; n < 2 * NB; ++n) v[n] = th[n];
  }
  __device__ __forceinline__ int nb() const { return NB; }
  __device__ __forceinline__ float x(int n) const { return v[n]; }
  __device__ __forceinline__ float y(int n) const { return v[NB + n]; }
};

struct ThetaAt {
  const float* th;
  int count;
  __device__ __forceinline__ ThetaAt(const float* t, int nb) : th(t), count(nb) {}
  __device__ __forceinline__ int nb() const { return count; }
  __device__ __forceinline__ float x(int n) const { return th[n]; }
  __device__ __forceinline__ float y(int n) const { return th[count + n]; }
};

// Output pixel j's source point under θ and its footprint; false for a
// non-finite point. The basis is stored by function, Bt [nb, D] (D = h·w;
// src/ops/grid.rs's Warp::basis_by_function): the lanes of a warp take
// consecutive pixels, so each of its loads is one coalesced 128-byte line,
// where the pixel-major B [D, nb] would spread a load over nb lines. The sum
// runs in n order, as the CPU's.
template <class Theta>
__device__ __forceinline__ bool warped_footprint(const float* basis_t, const Theta& th, int j, int h, int w,
                                                 Footprint* f) {
  const int D = h * w;
  float xs = 0.0f, ys = 0.0f;
#pragma unroll
  for (int n = 0; n < th.nb(); ++n) {
    float b = basis_t[(size_t)n * D + j];
    xs += b * th.x(n);
    ys += b * th.y(n);
  }
  return footprint(xs, ys, h, w, f);
}

// Bilinear read of c at a footprint.
__device__ __forceinline__ float bilinear(const float* c, const Footprint& f) {
  float sx = 1.0f - f.tx, sy = 1.0f - f.ty;
  return c[f.i00] * sx * sy + c[f.i01] * f.tx * sy + c[f.i10] * sx * f.ty + c[f.i11] * f.tx * f.ty;
}

// p_j of a row: c sampled at the warped point (NaN for a non-finite point).
template <class Theta>
__device__ __forceinline__ float warped_pixel(const float* c, const float* basis_t, const Theta& th, int j, int h,
                                              int w) {
  Footprint f;
  bool ok = warped_footprint(basis_t, th, j, h, w, &f);
  return ok ? bilinear(c, f) : __int_as_float(0x7fc00000);
}

// torch's BCE conventions: logs clamped at -100.
__device__ __forceinline__ float bernoulli_logp(float x, float p) {
  return x * fmaxf(logf(p), -100.0f) + (1.0f - x) * fmaxf(logf(1.0f - p), -100.0f);
}

// bernoulli_logp for a target known to be 0 or 1 (dynamic binarization):
// x ln p + (1 − x) ln(1 − p) is then ln(x ? p : 1 − p), one logarithm
// instead of two and the same bits (with x exactly 0 or 1 the other term
// is an exact zero, FMA or not; a NaN p gives −100 either way, as fmaxf
// drops the NaN). As src/ops/likelihood.rs::bernoulli_logp_binary.
__device__ __forceinline__ float bernoulli_logp_binary(float x, float p) {
  return fmaxf(logf(x > 0.5f ? p : 1.0f - p), -100.0f);
}

__device__ __forceinline__ float bernoulli_logp_grad(float x, float p) {
  return (x - p) / fmaxf(p * (1.0f - p), 1e-12f);
}

// Stable sigmoid, as src/ops/likelihood.rs.
__device__ __forceinline__ float sigmoidf_stable(float a) {
  float e = expf(-fabsf(a));
  float s = 1.0f / (1.0f + e);
  return a >= 0.0f ? s : e * s;
}

}  // namespace iwtvae
