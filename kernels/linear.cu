// Fully connected layers in torch's layout: Y[M,N] = act(X[M,K] · W[N,K]ᵀ + b[N]).
// A plain 64×64-tiled fp32 GEMM (each thread a 4×4 micro-tile, K in steps of
// 16 through shared memory) with the bias and ReLU in the epilogue. The
// decoder's big layer (fc3) does not come here: nll_fused.cu fuses it.
#include "common.cuh"

#define TILE 64
#define KSTEP 16

extern "C" __global__ void linear_fwd(const float* X, const float* W, const float* b, float* Y, int M, int N, int K,
                                      int relu) {
  __shared__ float xs[KSTEP][TILE + 1];
  __shared__ float ws[KSTEP][TILE + 1];
  int tx = threadIdx.x % 16, ty = threadIdx.x / 16;  // 256 threads
  int row0 = blockIdx.y * TILE, col0 = blockIdx.x * TILE;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < K; k0 += KSTEP) {
    // 64 rows × 16 k of X and of W: 1024 values each, 4 per thread.
    for (int t = threadIdx.x; t < TILE * KSTEP; t += 256) {
      int r = t / KSTEP, kk = t % KSTEP;
      int gr = row0 + r, gc = col0 + r, gk = k0 + kk;
      xs[kk][r] = (gr < M && gk < K) ? X[(size_t)gr * K + gk] : 0.0f;
      ws[kk][r] = (gc < N && gk < K) ? W[(size_t)gc * K + gk] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < KSTEP; ++kk) {
      float a[4], w[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        a[i] = xs[kk][ty * 4 + i];
        w[i] = ws[kk][tx * 4 + i];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * w[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    int r = row0 + ty * 4 + i;
    if (r >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      int c = col0 + tx * 4 + j;
      if (c >= N) continue;
      float v = acc[i][j] + b[c];
      Y[(size_t)r * N + c] = relu ? fmaxf(v, 0.0f) : v;
    }
  }
}
