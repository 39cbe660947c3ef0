// The encoder heads' nonlinearities and the latent layer's backward, side
// by side; mirrors src/network.rs (encode, and the reparameterisation /
// prior / entropy / KL part of backward). The forward reparameterisation
// itself is nll_fused.cu's reparam_latents (shared with the evaluator).
#include "common.cuh"
using namespace iwtvae;

#define LOG_SIGMA_CLAMP 6.0f

// The heads' outputs [B, 2Z + 2U] = [μz | raw log σz | pre-tanh μu | raw
// log σu] (one GEMM, Layout::enc_heads) into the latent buffers: μz, raw
// and clamped log σz, μu = tanh(pre), raw and clamped log σu, each [B, dim].
// One thread per output value.
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    encoder_heads(const float* heads, int B, int Z, int U, float* mu_z, float* ls_z_raw, float* ls_z, float* mu_u,
                  float* ls_u_raw, float* ls_u) {
  int H = 2 * Z + 2 * U;
  int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= B * H) return;
  int i = t / H, c = t % H;
  float v = heads[t];
  float clamped = fminf(fmaxf(v, -LOG_SIGMA_CLAMP), LOG_SIGMA_CLAMP);
  if (c < Z) {
    mu_z[i * Z + c] = v;
  } else if (c < 2 * Z) {
    ls_z_raw[i * Z + c - Z] = v;
    ls_z[i * Z + c - Z] = clamped;
  } else if (c < 2 * Z + U) {
    mu_u[i * U + c - 2 * Z] = tanhf(v);
  } else {
    ls_u_raw[i * U + c - 2 * Z - U] = v;
    ls_u[i * U + c - 2 * Z - U] = clamped;
  }
}

// One thread per (image i, dim d): with g_s = dlat[r, d] − cw[r]·lat[r, d]
// over the image's rows r = i·k + s (in order),
//   dμ = Σ_s g_s + kl·μ,   dlog σ = Σ_s (g_s·σ·noise[r, d] + cw[r]) + kl·(σ² − 1),
// or, with path (the path derivative: log q's μ, σ held fixed; iwae-dreg,
// elbo-stl), g_s = cd[r]·dlat[r, d] + cw[r]·(noise[r, d]/σ − lat[r, d]) and
//   dμ = Σ_s g_s,          dlog σ = Σ_s g_s·σ·noise[r, d];
// dlog σ = 0 where the clamp was active, and dμ·(1 − μ²) when μ = tanh(·).
// dμ and dlog σ go to the heads' gradient [B, ld] (the heads' GEMM's dY)
// at columns col + d and col + dim + d.
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    latent_bwd(const float* mu, const float* ls, const float* raw, const float* lat, const float* noise,
               const float* dlat, const float* coef_w, const float* coef_dlat, float* dheads, int ld, int col, int B,
               int k, int dim, float kl_scale, int tanh_mu, int path) {
  int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= B * dim) return;
  int i = t / dim, d = t % dim;
  float sigma = expf(ls[t]);
  float gm = 0.0f, gl = 0.0f;
  for (int s = 0; s < k; ++s) {
    size_t r = (size_t)i * k + s;
    float cw = coef_w[r];
    float nz = noise[r * dim + d];
    if (path) {
      float g = coef_dlat[r] * dlat[r * dim + d] + cw * (nz / sigma - lat[r * dim + d]);
      gm += g;
      gl += g * sigma * nz;
    } else {
      float g = dlat[r * dim + d] - cw * lat[r * dim + d];
      gm += g;
      gl += g * sigma * nz + cw;
    }
  }
  if (kl_scale != 0.0f) {
    gm += kl_scale * mu[t];
    gl += kl_scale * (expf(2.0f * ls[t]) - 1.0f);
  }
  if (raw[t] < -LOG_SIGMA_CLAMP || raw[t] > LOG_SIGMA_CLAMP) gl = 0.0f;
  if (tanh_mu) gm *= 1.0f - mu[t] * mu[t];
  float* row = dheads + (size_t)i * ld + col;
  row[d] = gm;
  row[dim + d] = gl;
}
