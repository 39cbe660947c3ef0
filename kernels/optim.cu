// Optimizer steps over the flat parameter vector, torch semantics; mirrors
// src/optim.rs (same expression order, so results match to rounding of
// sqrtf/division).
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    adadelta_step(float* p, const float* g, float* sq, float* acc, long long n, float lr) {
  const float rho = 0.9f, eps = 1e-6f;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    float gi = g[i];
    float s = sq[i] * rho + (1.0f - rho) * gi * gi;
    sq[i] = s;
    float delta = sqrtf(acc[i] + eps) / sqrtf(s + eps) * gi;
    acc[i] = acc[i] * rho + (1.0f - rho) * delta * delta;
    p[i] -= lr * delta;
  }
}

extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    adam_step(float* p, const float* g, float* m, float* v, long long n, float step_size, float bc2_sqrt) {
  const float b1 = 0.9f, b2 = 0.999f, eps = 1e-4f;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    float gi = g[i];
    m[i] = m[i] * b1 + (1.0f - b1) * gi;
    v[i] = v[i] * b2 + (1.0f - b2) * gi * gi;
    p[i] -= step_size * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
  }
}

// Adam with the step count read from the device (*t, incremented by
// count_step in the same stream), so one captured CUDA graph serves every
// step: the bias corrections change each step.
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    adam_step_dev(float* p, const float* g, float* m, float* v, long long n, float lr, const long long* t) {
  const float b1 = 0.9f, b2 = 0.999f, eps = 1e-4f;
  float bc1 = 1.0f - powf(b1, (float)*t), bc2 = 1.0f - powf(b2, (float)*t);
  float step_size = lr / bc1, bc2_sqrt = sqrtf(bc2);
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    float gi = g[i];
    m[i] = m[i] * b1 + (1.0f - b1) * gi;
    v[i] = v[i] * b2 + (1.0f - b2) * gi * gi;
    p[i] -= step_size * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
  }
}

extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS) count_step(long long* t) { *t += 1; }

// *bad = 1 when any of g[0..n) is not finite (the CPU loop's gradient check).
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS) flag_nonfinite(const float* g, long long n, int* bad) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    if (!isfinite(g[i])) *bad = 1;
}
