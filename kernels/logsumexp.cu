// Importance weighting: per image, logsumexp over its k log-weights, the
// loss term, and the normalized weights for the backward. One warp per image;
// mirrors src/ops/logsumexp.rs and src/objective.rs (iwae).
#include "common.cuh"
using namespace iwtvae;

// lse[b] = logsumexp_s logw[b, s]; coef[b, s] = -w̃_bs * scale (scale = 1/B).
extern "C" __global__ void iwae_weights(const float* logw, float* lse, float* coef, int images, int k, float scale) {
  int b = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (b >= images) return;
  const float* v = logw + (size_t)b * k;
  float m = -INFINITY;
  for (int s = lane; s < k; s += 32) m = fmaxf(m, v[s]);
  m = warp_max(m);
  float sum = 0.0f;
  if (isfinite(m))
    for (int s = lane; s < k; s += 32) sum += expf(v[s] - m);
  sum = warp_sum(sum);
  float l = isfinite(m) ? m + logf(sum) : m;
  if (lane == 0) lse[b] = l;
  if (coef)
    for (int s = lane; s < k; s += 32) coef[(size_t)b * k + s] = isfinite(l) ? -expf(v[s] - l) * scale : __int_as_float(0x7fc00000);
}

// Streaming logsumexp for evaluation: fold a chunk of kk log-weights per
// image into (max, sum) accumulators, so k = 5000 never needs all samples.
extern "C" __global__ void lse_fold(const float* logw, float* acc_max, float* acc_sum, float* acc_mean, int images,
                                    int kk) {
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
  float sum = 0.0f;
  if (isfinite(m))
    for (int s = lane; s < kk; s += 32) sum += expf(v[s] - m);
  sum = warp_sum(sum);
  if (lane == 0) {
    float om = acc_max[b], os = acc_sum[b];
    float nm = fmaxf(om, m);
    float ns = (isfinite(nm) ? (os * (isfinite(om) ? expf(om - nm) : 0.0f) + sum * (isfinite(m) ? expf(m - nm) : 0.0f))
                             : 0.0f);
    acc_max[b] = nm;
    acc_sum[b] = ns;
    acc_mean[b] += tot;
  }
}
