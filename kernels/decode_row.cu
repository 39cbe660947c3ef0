// The decoder's per-row epilogue for training, forward and backward side by
// side; mirrors src/ops/fused.rs. One block per row (one sample):
//   forward   a = logits → c = sigmoid(a) → grid(θ) → p = grid_sample(c)
//             → log p(x|z,u) (block sum) and log w = log p + latent terms
//   backward  dp = coef·(x − p)/max(p(1 − p), 1e-12) → dc (scattered in
//             shared memory), dθ (per-pixel coordinate gradients reduced
//             against the warp basis) → da = dc · c(1 − c)
// Rows r = b·k + s; x is [B, D]; basis_t [nb, D], the warp basis by function
// (common.cuh; nb = 0: no transform, p = c).
// The backward's scatter adds in shared memory with atomics, so its sums
// (and so training on the GPU) are not bit-reproducible run to run; every
// other sum has a fixed order.
#include "common.cuh"
using namespace iwtvae;

#define THREADS IWTVAE_ROW_THREADS

__device__ __forceinline__ float block_sum(float v, float* red) {
  v = warp_sum(v);
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float s = 0.0f;
  if (threadIdx.x == 0)
    for (int w = 0; w < THREADS / 32; ++w) s += red[w];
  return s;  // valid in thread 0
}

// a [R, D]: logits in, c out. logpx, logw [R]; lw_latent [R] from reparam_latents.
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    decode_row_fwd(float* a, const float* theta, const float* basis_t, const float* x, const float* lw_latent,
                   float* logpx, float* logw, int R, int k, int D, int h, int w, int nb) {
  IWTVAE_DYNAMIC_SHARED(float, smem, 16);
  float* cs = smem;       // [D]
  float* th = cs + D;     // [2 nb]
  float* red = th + 2 * nb;  // [THREADS / 32]
  int r = blockIdx.x;
  if (r >= R) return;
  float* ar = a + (size_t)r * D;
  for (int j = threadIdx.x; j < D; j += THREADS) {
    float c = sigmoidf_stable(ar[j]);
    cs[j] = c;
    ar[j] = c;
  }
  for (int n = threadIdx.x; n < 2 * nb; n += THREADS) th[n] = theta[(size_t)r * 2 * nb + n];
  __syncthreads();
  const float* xr = x + (size_t)(r / k) * D;
  float lp = 0.0f;
  for (int j = threadIdx.x; j < D; j += THREADS)
    lp += bernoulli_logp(xr[j], nb == 0 ? cs[j] : warped_pixel(cs, basis_t, ThetaAt(th, nb), j, h, w));
  float s = block_sum(lp, red);
  if (threadIdx.x == 0) {
    logpx[r] = s;
    logw[r] = s + lw_latent[r];
  }
}

// c [R, D] (the forward's output); coef [R] = ∂Loss/∂log p(x|z_r,u_r).
// Out: da [R, D] = ∂Loss/∂logits, dtheta [R, 2 nb].
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    decode_row_bwd(const float* c, const float* theta, const float* basis_t, const float* x, const float* coef, float* da,
                   float* dtheta, int R, int k, int D, int h, int w, int nb) {
  IWTVAE_DYNAMIC_SHARED(float, smem, 16);
  float* cs = smem;           // [D]
  float* dcs = cs + D;        // [D]
  float* dgx = dcs + D;       // [D]
  float* dgy = dgx + D;       // [D]
  float* th = dgy + D;        // [2 nb]
  int r = blockIdx.x;
  if (r >= R) return;
  const float* cr = c + (size_t)r * D;
  for (int j = threadIdx.x; j < D; j += THREADS) {
    cs[j] = cr[j];
    dcs[j] = 0.0f;
  }
  for (int n = threadIdx.x; n < 2 * nb; n += THREADS) th[n] = theta[(size_t)r * 2 * nb + n];
  __syncthreads();
  const float* xr = x + (size_t)(r / k) * D;
  float g = coef[r];
  for (int j = threadIdx.x; j < D; j += THREADS) {
    if (nb == 0) {
      dcs[j] = g * bernoulli_logp_grad(xr[j], cs[j]);
      continue;
    }
    Footprint f;
    bool ok = warped_footprint(basis_t, ThetaAt(th, nb), j, h, w, &f);
    float sx = 1.0f - f.tx, sy = 1.0f - f.ty;
    float c00 = cs[f.i00], c01 = cs[f.i01], c10 = cs[f.i10], c11 = cs[f.i11];
    float p = bilinear(cs, f);
    float dp = g * bernoulli_logp_grad(xr[j], p);
    if (ok) {
      atomicAdd(&dcs[f.i00], dp * sx * sy);
      atomicAdd(&dcs[f.i01], dp * f.tx * sy);
      atomicAdd(&dcs[f.i10], dp * sx * f.ty);
      atomicAdd(&dcs[f.i11], dp * f.tx * f.ty);
      float gix = (c01 - c00) * sy + (c11 - c10) * f.ty;
      float giy = (c10 - c00) * sx + (c11 - c01) * f.tx;
      dgx[j] = dp * gix * f.dix;
      dgy[j] = dp * giy * f.diy;
    } else {
      dgx[j] = __int_as_float(0x7fc00000);
      dgy[j] = __int_as_float(0x7fc00000);
    }
  }
  __syncthreads();
  // dθ[q] = Σ_j Bt[q, j]·dgx[j], dθ[nb + q] = Σ_j Bt[q, j]·dgy[j]: one warp per output.
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int q = warp; q < 2 * nb; q += THREADS / 32) {
    const float* dg = q < nb ? dgx : dgy;
    int col = q < nb ? q : q - nb;
    float s = 0.0f;
    for (int j = lane; j < D; j += 32) s += basis_t[(size_t)col * D + j] * dg[j];
    s = warp_sum(s);
    if (lane == 0) dtheta[(size_t)r * 2 * nb + q] = s;
  }
  float* dar = da + (size_t)r * D;
  for (int j = threadIdx.x; j < D; j += THREADS) dar[j] = dcs[j] * cs[j] * (1.0f - cs[j]);
}
