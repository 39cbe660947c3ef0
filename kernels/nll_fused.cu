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
#include "wmma_tile.cuh"
using namespace iwtvae;

// fp32 SIMT variant: SAMPLES samples per block of 256 threads (8 warps). The
// activations are staged transposed, [Hd][SAMPLES], so each k step reads the
// 16 samples' values as 4 broadcast float4 loads (one 16-byte shared load
// per 4 multiply-adds), and each thread runs one pixel's 16 sums, so W3t is
// read from L2 once per 16 samples. Shared memory SAMPLES·(Hd + D)·4 bytes
// (66.5 KB for hidden 256: the launch opts in past 48 KiB).
#define SAMPLES IWTVAE_FUSED_SAMPLES
#define FUSED_WARPS IWTVAE_FUSED_WARPS
static_assert(SAMPLES % 4 == 0, "the k steps read SAMPLES values as float4s");

// Σ_j log p(x_j | p_j) of one sample, p = grid_sample(c, grid(θ)), summed
// by one warp (lane-strided, then a warp reduction). `binary`: the targets
// are 0 or 1 (dynamic binarization), so one logarithm per pixel, same bits.
template <class Theta>
__device__ __forceinline__ float row_loglik(const float* c, const float* xr, const Theta& th, const float* basis_t,
                                            int h, int w, bool binary, int lane) {
  float lp = 0.0f;
  for (int j = lane; j < h * w; j += 32) {
    float p = warped_pixel(c, basis_t, th, j, h, w);
    lp += binary ? bernoulli_logp_binary(xr[j], p) : bernoulli_logp(xr[j], p);
  }
  return warp_sum(lp);
}

// The same without a transform (nb = 0): p = c.
__device__ __forceinline__ float row_loglik_canonical(const float* c, const float* xr, int D, bool binary, int lane) {
  float lp = 0.0f;
  for (int j = lane; j < D; j += 32) lp += binary ? bernoulli_logp_binary(xr[j], c[j]) : bernoulli_logp(xr[j], c[j]);
  return warp_sum(lp);
}

// One sample's log p(x|z,u), its θ in registers for the seed's two warps
// (affine nb = 3, TPS 3×3 nb = 9) and read from memory for any other nb.
__device__ __forceinline__ float sample_loglik(const float* c, const float* xr, const float* th, const float* basis_t,
                                               int D, int h, int w, int nb, bool binary, int lane) {
  switch (nb) {
    case 0:
      return row_loglik_canonical(c, xr, D, binary, lane);
    case 3:
      return row_loglik(c, xr, ThetaRegs<3>(th), basis_t, h, w, binary, lane);
    case 9:
      return row_loglik(c, xr, ThetaRegs<9>(th), basis_t, h, w, binary, lane);
    default:
      return row_loglik(c, xr, ThetaAt(th, nb), basis_t, h, w, binary, lane);
  }
}

// The epilogue of both fc3 variants: samples r0 .. r0 + nrows, canonical
// images in cs (row s at cs + s·ld), one warp per sample in turn:
// logpx[r] = log p(x|z_r, u_r), logw[r] = logpx[r] + the latent terms.
__device__ __forceinline__ void samples_loglik(const float* cs, int ld, int r0, int nrows, int warps, int R, int kk,
                                               const float* x, const float* theta, const float* basis_t,
                                               const float* lw_latent, float* logpx, float* logw, int D, int h, int w,
                                               int nb, bool binary) {
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int s = warp; s < nrows; s += warps) {
    int r = r0 + s;
    if (r >= R) break;  // warp-uniform: later samples are past R too
    float lp = sample_loglik(cs + (size_t)s * ld, x + (size_t)(r / kk) * D, theta + (size_t)r * 2 * nb, basis_t, D,
                             h, w, nb, binary, lane);
    if (lane == 0) {
      logpx[r] = lp;
      logw[r] = lp + lw_latent[r];
    }
  }
}

extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    nll_fc3_fused(const float* d2, const float* W3t, const float* b3, const float* theta, const float* basis_t,
                  const float* x, const float* lw_latent, float* logpx, float* logw, int R, int kk, int Hd, int D,
                  int h, int w, int nb, int binary) {
  IWTVAE_DYNAMIC_SHARED(float, smem, 16);
  float* hs = smem;                  // [Hd][SAMPLES]
  float* cs = smem + SAMPLES * Hd;   // [SAMPLES][D]
  int r0 = blockIdx.x * SAMPLES;
  for (int t = threadIdx.x; t < SAMPLES * Hd; t += blockDim.x) {
    int s = t / Hd, k = t % Hd;
    hs[k * SAMPLES + s] = (r0 + s < R) ? d2[(size_t)(r0 + s) * Hd + k] : 0.0f;
  }
  __syncthreads();
  for (int j = threadIdx.x; j < D; j += blockDim.x) {
    float acc[SAMPLES];
#pragma unroll
    for (int s = 0; s < SAMPLES; ++s) acc[s] = b3[j];
    for (int k = 0; k < Hd; ++k) {
      float wv = W3t[(size_t)k * D + j];
      const float4* hk = reinterpret_cast<const float4*>(hs + k * SAMPLES);
#pragma unroll
      for (int q = 0; q < SAMPLES / 4; ++q) {
        float4 v = hk[q];
        acc[4 * q + 0] += wv * v.x;
        acc[4 * q + 1] += wv * v.y;
        acc[4 * q + 2] += wv * v.z;
        acc[4 * q + 3] += wv * v.w;
      }
    }
#pragma unroll
    for (int s = 0; s < SAMPLES; ++s) cs[s * D + j] = sigmoidf_stable(acc[s]);
  }
  __syncthreads();
  samples_loglik(cs, D, r0, SAMPLES, FUSED_WARPS, R, kk, x, theta, basis_t, lw_latent, logpx, logw, D, h, w, nb,
                 binary != 0);
}

// The tensor-core variants: the same fused epilogue after fc3 computed on
// the tensor cores (wmma_tile.cuh) in TF32 or BF16 with fp32 sums, for
// TC_ROWS = 32 samples per block: the [32, Dp] logits live in shared memory
// (plus the staged [32, Hdp] inputs: 133 KB for 28×28 and hidden 256, so the
// launch opts in past 48 KiB).
#define TC_ROWS IWTVAE_TC_ROWS
#define TC_ROW_TILES (TC_ROWS / 16)
#define TC_WARPS IWTVAE_TC_WARPS
static_assert(TC_ROWS % 16 == 0, "TC_ROWS is whole 16-row tiles");

template <bool BF16>
__device__ __forceinline__ void nll_fc3_tc(const float* d2, const void* W3p, const float* b3, const float* theta,
                                           const float* basis_t, const float* x, const float* lw_latent, float* logpx,
                                           float* logw, int R, int kk, int Hd, int Hdp, int D, int Dp, int h, int w,
                                           int nb, int binary) {
  IWTVAE_DYNAMIC_SHARED(unsigned char, smem_raw, 128);
  int r0 = blockIdx.x * TC_ROWS;
  float* cs = stage_and_multiply<BF16, TC_ROW_TILES, TC_WARPS>(smem_raw, d2, r0, R, Hd, Hdp, W3p, Dp);  // [TC_ROWS][Dp]
  for (int t = threadIdx.x; t < TC_ROWS * D; t += blockDim.x) {
    int s = t / D, j = t % D;
    cs[s * Dp + j] = sigmoidf_stable(cs[s * Dp + j] + b3[j]);
  }
  __syncthreads();
  samples_loglik(cs, Dp, r0, TC_ROWS, TC_WARPS, R, kk, x, theta, basis_t, lw_latent, logpx, logw, D, h, w, nb,
                 binary != 0);
}

extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    nll_fc3_tf32(const float* d2, const float* W3p, const float* b3, const float* theta, const float* basis_t,
                 const float* x, const float* lw_latent, float* logpx, float* logw, int R, int kk, int Hd, int Hdp,
                 int D, int Dp, int h, int w, int nb, int binary) {
  nll_fc3_tc<false>(d2, W3p, b3, theta, basis_t, x, lw_latent, logpx, logw, R, kk, Hd, Hdp, D, Dp, h, w, nb, binary);
}

extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    nll_fc3_bf16(const float* d2, const __nv_bfloat16* W3p, const float* b3, const float* theta, const float* basis_t,
                 const float* x, const float* lw_latent, float* logpx, float* logw, int R, int kk, int Hd, int Hdp,
                 int D, int Dp, int h, int w, int nb, int binary) {
  nll_fc3_tc<true>(d2, W3p, b3, theta, basis_t, x, lw_latent, logpx, logw, R, kk, Hd, Hdp, D, Dp, h, w, nb, binary);
}

// z = μz + σz ε, u = μu + σu η for row r (local image r / kk), and the latent
// part of log w: −½|z|² − ½|u|² + ½|ε|² + ½|η|² + Σ log σz + Σ log σu.
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    reparam_latents(const float* mu_z, const float* ls_z, const float* eps, const float* mu_u, const float* ls_u,
                    const float* eta, float* z, float* u, float* lw_latent, int R, int kk, int Z, int U) {
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
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    add_theta_id(float* theta, const float* theta_id, int R, int T) {
  int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t < R * T) theta[t] += theta_id[t % T];
}
