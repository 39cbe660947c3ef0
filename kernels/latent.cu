// The encoder heads' nonlinearities and the latent layer's backward, side
// by side; mirrors src/network.rs (encode, and the reparameterisation /
// prior / entropy / KL part of backward). The forward reparameterisation
// itself is nll_fused.cu's reparam_latents (shared with the evaluator).
#include "common.cuh"
using namespace iwtvae;

#define LOG_SIGMA_CLAMP 6.0f

// log σ = clamp(raw, ±6) for z [nz values] and u [nu values]; μu = tanh(pre).
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    encoder_heads(const float* ls_z_raw, float* ls_z, int nz, const float* mu_u_pre, float* mu_u, const float* ls_u_raw,
                  float* ls_u, int nu) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < nz) ls_z[i] = fminf(fmaxf(ls_z_raw[i], -LOG_SIGMA_CLAMP), LOG_SIGMA_CLAMP);
  if (i < nu) {
    mu_u[i] = tanhf(mu_u_pre[i]);
    ls_u[i] = fminf(fmaxf(ls_u_raw[i], -LOG_SIGMA_CLAMP), LOG_SIGMA_CLAMP);
  }
}

// One thread per (image i, dim d): with g_s = dlat[r, d] − cw[r]·lat[r, d]
// over the image's rows r = i·k + s (in order),
//   dμ = Σ_s g_s + kl·μ,   dlog σ = Σ_s (g_s·σ·noise[r, d] + cw[r]) + kl·(σ² − 1),
// dlog σ = 0 where the clamp was active, and dμ·(1 − μ²) when μ = tanh(·).
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    latent_bwd(const float* mu, const float* ls, const float* raw, const float* lat, const float* noise,
               const float* dlat, const float* coef_w, float* dmu, float* dls, int B, int k, int dim, float kl_scale,
               int tanh_mu) {
  int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= B * dim) return;
  int i = t / dim, d = t % dim;
  float sigma = expf(ls[t]);
  float gm = 0.0f, gl = 0.0f;
  for (int s = 0; s < k; ++s) {
    size_t r = (size_t)i * k + s;
    float cw = coef_w[r];
    float g = dlat[r * dim + d] - cw * lat[r * dim + d];
    gm += g;
    gl += g * sigma * noise[r * dim + d] + cw;
  }
  if (kl_scale != 0.0f) {
    gm += kl_scale * mu[t];
    gl += kl_scale * (expf(2.0f * ls[t]) - 1.0f);
  }
  if (raw[t] < -LOG_SIGMA_CLAMP || raw[t] > LOG_SIGMA_CLAMP) gl = 0.0f;
  if (tanh_mu) gm *= 1.0f - mu[t] * mu[t];
  dmu[t] = gm;
  dls[t] = gl;
}
