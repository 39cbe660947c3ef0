// The large-k evaluator's hot path, fused: for a tile of samples, the
// decoder's last layer (logits = d2 · W3ᵀ + b3), sigmoid, the warp's grid,
// bilinear sampling and the Bernoulli log-likelihood, reduced per sample.
// The canonical images live in shared memory only: the 784-wide decoder
// output never travels to global memory. Mirrors src/ops/fused.rs.
//
// rows R = images · kk (row r belongs to local image r / kk). W3t is W3
// transposed, [Hd, D], so that consecutive threads read consecutive pixels.
// nb = 0 means no transform (p = c).
#include "common.cuh"
using namespace iwtvae;

#define SAMPLES 8  // samples per block = warps per block (256 threads)

extern "C" __global__ void nll_fc3_fused(const float* d2, const float* W3t, const float* b3, const float* theta,
                                         const float* basis, const float* x, const float* lw_latent, float* logpx,
                                         float* logw, int R, int kk, int Hd, int D, int h, int w, int nb) {
  extern __shared__ float smem[];
  float* hs = smem;                  // [SAMPLES][Hd]
  float* cs = smem + SAMPLES * Hd;   // [SAMPLES][D]
  int r0 = blockIdx.x * SAMPLES;
  for (int t = threadIdx.x; t < SAMPLES * Hd; t += blockDim.x) {
    int s = t / Hd, k = t % Hd;
    hs[t] = (r0 + s < R) ? d2[(size_t)(r0 + s) * Hd + k] : 0.0f;
  }
  __syncthreads();
  for (int j = threadIdx.x; j < D; j += blockDim.x) {
    float acc[SAMPLES];
#pragma unroll
    for (int s = 0; s < SAMPLES; ++s) acc[s] = b3[j];
    for (int k = 0; k < Hd; ++k) {
      float wv = W3t[(size_t)k * D + j];
#pragma unroll
      for (int s = 0; s < SAMPLES; ++s) acc[s] += wv * hs[s * Hd + k];
    }
#pragma unroll
    for (int s = 0; s < SAMPLES; ++s) cs[s * D + j] = sigmoidf_stable(acc[s]);
  }
  __syncthreads();
  int s = threadIdx.x / 32, lane = threadIdx.x % 32;
  int r = r0 + s;
  if (s >= SAMPLES || r >= R) return;
  const float* c = cs + s * D;
  const float* xr = x + (size_t)(r / kk) * D;
  const float* th = theta + (size_t)r * 2 * nb;
  float lp = 0.0f;
  for (int j = lane; j < D; j += 32) {
    float p;
    if (nb == 0) {
      p = c[j];
    } else {
      float xs = 0.0f, ys = 0.0f;
      for (int n = 0; n < nb; ++n) {
        float bv = basis[(size_t)j * nb + n];
        xs += bv * th[n];
        ys += bv * th[nb + n];
      }
      Footprint f;
      bool ok = footprint(xs, ys, h, w, &f);
      float sx = 1.0f - f.tx, sy = 1.0f - f.ty;
      p = c[f.i00] * sx * sy + c[f.i01] * f.tx * sy + c[f.i10] * sx * f.ty + c[f.i11] * f.tx * f.ty;
      if (!ok) p = __int_as_float(0x7fc00000);
    }
    lp += bernoulli_logp(xr[j], p);
  }
  lp = warp_sum(lp);
  if (lane == 0) {
    logpx[r] = lp;
    logw[r] = lp + lw_latent[r];
  }
}

// z = μz + σz ε, u = μu + σu η for row r (local image r / kk), and the latent
// part of log w: −½|z|² − ½|u|² + ½|ε|² + ½|η|² + Σ log σz + Σ log σu.
extern "C" __global__ void reparam_latents(const float* mu_z, const float* ls_z, const float* eps, const float* mu_u,
                                           const float* ls_u, const float* eta, float* z, float* u, float* lw_latent,
                                           int R, int kk, int Z, int U) {
  int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= R) return;
  int i = r / kk;
  float lw = 0.0f;
  for (int d = 0; d < Z; ++d) {
    float e = eps[(size_t)r * Z + d], l = ls_z[(size_t)i * Z + d];
    float v = mu_z[(size_t)i * Z + d] + expf(l) * e;
    z[(size_t)r * Z + d] = v;
    lw += 0.5f * (e * e - v * v) + l;
  }
  for (int d = 0; d < U; ++d) {
    float e = eta[(size_t)r * U + d], l = ls_u[(size_t)i * U + d];
    float v = mu_u[(size_t)i * U + d] + expf(l) * e;
    u[(size_t)r * U + d] = v;
    lw += 0.5f * (e * e - v * v) + l;
  }
  lw_latent[r] = lw;
}

// θ rows += θ_id (after u2theta's linear layer).
extern "C" __global__ void add_theta_id(float* theta, const float* theta_id, int R, int T) {
  int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t < R * T) theta[t] += theta_id[t % T];
}
