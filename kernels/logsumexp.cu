// Importance weighting: per image, logsumexp over its k log-weights, the
// loss term, and the normalized weights for the backward. One warp per image;
// mirrors src/ops/logsumexp.rs and src/objective.rs (iwae).
#include "common.cuh"
using namespace iwtvae;

// logsumexp of v[0..k), by one warp (every lane gets the result); −∞ when
// all are −∞, and the max itself when it is +∞ or NaN.
__device__ __forceinline__ float warp_logsumexp(const float* v, int k, int lane) {
  float m = -INFINITY;
  for (int s = lane; s < k; s += 32) m = fmaxf(m, v[s]);
  m = warp_max(m);
  float sum = 0.0f;
  if (isfinite(m))
    for (int s = lane; s < k; s += 32) sum += expf(v[s] - m);
  sum = warp_sum(sum);
  return isfinite(m) ? m + logf(sum) : m;
}

// lse[b] = logsumexp_s logw[b, s]; coef[b, s] = -w̃_bs * scale (scale = 1/B).
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    iwae_weights(const float* logw, float* lse, float* coef, int images, int k, float scale) {
  int b = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (b >= images) return;
  const float* v = logw + (size_t)b * k;
  float l = warp_logsumexp(v, k, lane);
  if (lane == 0) lse[b] = l;
  if (coef)
    for (int s = lane; s < k; s += 32) coef[(size_t)b * k + s] = isfinite(l) ? -expf(v[s] - l) * scale : __int_as_float(0x7fc00000);
}

// Streaming logsumexp for evaluation: fold a chunk of kk log-weights per
// image into (max, sum) accumulators, so k = 5000 never needs all samples;
// acc_sum2 keeps Σ exp(2(v − max)) beside Σ exp(v − max), so that the
// effective sample size (Σw)²/Σw² is sum²/sum2. With record_first,
// first[b] = logpx of the chunk's first sample (the one-sample
// reconstruction of the first chunk).
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    lse_fold(const float* logw, float* acc_max, float* acc_sum, float* acc_sum2, float* acc_mean, int images, int kk,
             const float* logpx, float* first, int record_first) {
  int b = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (b >= images) return;
  const float* v = logw + (size_t)b * kk;
  float m = -INFINITY, tot = 0.0f;
  for (int s = lane; s < kk; s += 32) {
    m = fmaxf(m, v[s]);
    tot += v[s];
  }
  m = warp_max(m);
  tot = warp_sum(tot);
  float sum = 0.0f, sum2 = 0.0f;
  if (isfinite(m))
    for (int s = lane; s < kk; s += 32) {
      float e = expf(v[s] - m);
      sum += e;
      sum2 += e * e;
    }
  sum = warp_sum(sum);
  sum2 = warp_sum(sum2);
  if (lane == 0) {
    float om = acc_max[b], os = acc_sum[b], os2 = acc_sum2[b];
    float nm = fmaxf(om, m);
    float fo = isfinite(nm) && isfinite(om) ? expf(om - nm) : 0.0f;
    float fm = isfinite(nm) && isfinite(m) ? expf(m - nm) : 0.0f;
    acc_max[b] = nm;
    acc_sum[b] = os * fo + sum * fm;
    acc_sum2[b] = os2 * (fo * fo) + sum2 * (fm * fm);
    acc_mean[b] += tot;
    if (record_first) first[b] = logpx[(size_t)b * kk];
  }
}

// The IWAE bound at smaller sample counts from the evaluation's samples
// (`eval --bounds`; src/ops/logsumexp.rs GroupedLse): sample g·s0.. of image
// b falls in consecutive groups of sizes[j], and state[(b·nbounds + j)·3 ..]
// holds the open group's (max, Σ exp(v − max)) and Σ over closed groups of
// (logsumexp − ln size), in double as the CPU keeps them (5000 groups of
// values near −90 would lose ~1e-4 nats to a float sum). One thread per
// (image, bound) walks the chunk's kk samples in order, so a group may span
// chunks; sample0 is the chunk's first sample index. A NaN marks the open
// group NaN and +∞ makes it +∞, as Lse does. The work is ~kk exps per
// thread, next to the decoder's ~1 MFLOP per sample.
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    bound_fold(const float* logw, const int* sizes, double* state, int images, int nbounds, int kk, int sample0) {
  int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= images * nbounds) return;
  int b = t / nbounds, j = t % nbounds;
  long long size = sizes[j];
  double* st = state + (size_t)t * 3;
  double m = st[0], sum = st[1], total = st[2];
  const float* v = logw + (size_t)b * kk;
  for (int s = 0; s < kk; s++) {
    long long at = (long long)sample0 + s;
    if (at % size == 0) {
      m = -INFINITY;
      sum = 0.0;
    }
    double x = (double)v[s];
    if (isnan(m)) {
    } else if (isnan(x)) {
      m = x;
    } else if (x == INFINITY) {
      m = INFINITY;
    } else if (m == INFINITY || x == -INFINITY) {
    } else if (x > m) {
      sum = sum * exp(m - x) + 1.0;
      m = x;
    } else {
      sum += exp(x - m);
    }
    if (at % size == size - 1) total += (isnan(m) || isinf(m) ? m : m + log(sum)) - log((double)size);
  }
  st[0] = m;
  st[1] = sum;
  st[2] = total;
}

// The training objectives (src/objective.rs), one warp per image b:
// img_loss[b] (−bound of the image), coef_px[r] = ∂Loss/∂log p(x|z_r,u_r),
// coef_w[r] the encoder's coefficient on the latent terms of log w_r and
// coef_dlat[r] its factor on the decoder's ∂/∂latent; Loss = mean_b img_loss.
//   mode 0 iwae     img_loss = −(lse_s log w − ln k),   coef = −w̃ / B
//   mode 1 elbo     img_loss = −mean_s log w,           coef = −1 / (B k)
//   mode 2 elbo-kl  img_loss = −(log p(x|·) − KL),      coef_px = −1 / B, coef_w = 0 (k = 1)
// coef_dlat = 1, but with dreg (iwae-dreg: mode 0) coef_w = −w̃² / B and
// coef_dlat = w̃.
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    objective_terms(const float* logw, const float* logpx, const float* mu_z, const float* ls_z, const float* mu_u,
                    const float* ls_u, float* img_loss, float* coef_px, float* coef_w, float* coef_dlat, int images,
                    int k, int Z, int U, int mode, int dreg) {
  int b = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (b >= images) return;
  const float* v = logw + (size_t)b * k;
  float inv_b = 1.0f / (float)images;
  // One store after the branches: a store in each kept img_loss + b live
  // across the division slow-path calls, which spilled it on sm_80.
  float loss;
  if (mode == 0) {
    float l = warp_logsumexp(v, k, lane);
    loss = -(l - logf((float)k));
    for (int s = lane; s < k; s += 32) {
      float w = isfinite(l) ? expf(v[s] - l) : __int_as_float(0x7fc00000);
      size_t r = (size_t)b * k + s;
      coef_px[r] = -w * inv_b;
      coef_w[r] = dreg ? -w * w * inv_b : -w * inv_b;
      coef_dlat[r] = dreg ? w : 1.0f;
    }
  } else if (mode == 1) {
    float tot = 0.0f;
    for (int s = lane; s < k; s += 32) tot += v[s];
    tot = warp_sum(tot);
    loss = -tot / (float)k;
    float c = -inv_b / (float)k;
    for (int s = lane; s < k; s += 32) {
      coef_px[(size_t)b * k + s] = c;
      coef_w[(size_t)b * k + s] = c;
      coef_dlat[(size_t)b * k + s] = 1.0f;
    }
  } else {
    float kl = 0.0f;
    for (int d = lane; d < Z + U; d += 32) {
      float m = d < Z ? mu_z[(size_t)b * Z + d] : mu_u[(size_t)b * U + d - Z];
      float l = d < Z ? ls_z[(size_t)b * Z + d] : ls_u[(size_t)b * U + d - Z];
      kl += 0.5f * (expf(2.0f * l) + m * m - 1.0f - 2.0f * l);
    }
    kl = warp_sum(kl);
    loss = -(logpx[b] - kl);
    if (lane == 0) {
      coef_px[b] = -inv_b;
      coef_w[b] = 0.0f;
      coef_dlat[b] = 1.0f;
    }
  }
  if (lane == 0) img_loss[b] = loss;
}

// out[0] = mean of v[0..n) (one warp; n is a batch size).
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS) mean_into(const float* v, float* out, int n) {
  float s = 0.0f;
  for (int i = threadIdx.x; i < n; i += 32) s += v[i];
  s = warp_sum(s);
  if (threadIdx.x == 0) out[0] = s / (float)n;
}
