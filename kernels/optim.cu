// Optimizer steps over the flat parameter vector, torch semantics; mirrors
// src/optim.rs (same expression order, so results match to rounding of
// sqrtf/division). Each step also sets *bad = 1 when a gradient it reads is
// not finite (the CPU loop's gradient check), in the same pass: the run
// stops at that step and keeps its last good checkpoint, so the update the
// step made anyway is never saved.
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    adadelta_step(float* p, const float* g, float* sq, float* acc, long long n, float lr, int* bad) {
  const float rho = 0.9f, eps = 1e-6f;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    float gi = g[i];
    if (!isfinite(gi)) *bad = 1;
    float s = sq[i] * rho + (1.0f - rho) * gi * gi;
    sq[i] = s;
    float delta = sqrtf(acc[i] + eps) / sqrtf(s + eps) * gi;
    acc[i] = acc[i] * rho + (1.0f - rho) * delta * delta;
    p[i] -= lr * delta;
  }
}

// Adam with the step count read from the device (*t, incremented by
// count_step in the same stream), so one captured CUDA graph serves every
// step: the bias corrections change each step.
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    adam_step_dev(float* p, const float* g, float* m, float* v, long long n, float lr, const long long* t, int* bad) {
  const float b1 = 0.9f, b2 = 0.999f, eps = 1e-4f;
  float bc1 = 1.0f - powf(b1, (float)*t), bc2 = 1.0f - powf(b2, (float)*t);
  float step_size = lr / bc1, bc2_sqrt = sqrtf(bc2);
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    float gi = g[i];
    if (!isfinite(gi)) *bad = 1;
    m[i] = m[i] * b1 + (1.0f - b1) * gi;
    v[i] = v[i] * b2 + (1.0f - b2) * gi * gi;
    p[i] -= step_size * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
  }
}

extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS) count_step(long long* t) { *t += 1; }

// The epoch's bookkeeping on the device, so that a captured step needs no
// copy to or from the host: the epoch's permutation is uploaded once and a
// step counter (zeroed at the epoch's start) names the step.
//
// items[i] = perm[(*step mod steps)·stride + i] for i < count: the batch of
// the counter's step (stride = the batch size; count = this batch's size).
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    batch_items(const unsigned* perm, long long n_perm, const int* step, int steps, int stride, int count,
                unsigned* items) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= count) return;
  long long at = (long long)(*step % steps) * stride + i;
  // The host checks that every step's batch lies in perm; the guard keeps a
  // counter gone wrong from reading past it.
  items[i] = at < n_perm ? perm[at] : 0u;
}

// loss_hist[s] = *loss and bad_hist[s] = *bad at the counter's step s, then
// the counter moves on (one thread, the step's last launch).
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    record_step(const float* loss, const int* bad, float* loss_hist, int* bad_hist, int* step, int steps) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  int s = *step % steps;
  loss_hist[s] = *loss;
  bad_hist[s] = *bad;
  *step = s + 1;
}
