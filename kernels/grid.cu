// Batched sampling-grid generation: xs = B·θ[:nb], ys = B·θ[nb:], with the
// warp basis of src/ops/grid.rs (TPS: the fixed matrix M; affine: (x, y, 1))
// stored by function, Bt [nb, D], so neighbouring threads read neighbouring
// floats. One thread per (row, pixel); θ of the row in shared memory.
#include "common.cuh"
using namespace iwtvae;

extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    grid_fwd(const float* basis_t, const float* theta, float* xs, float* ys, int rows, int d, int nb) {
  IWTVAE_DYNAMIC_SHARED(float, th, 16);
  int r = blockIdx.y;
  for (int j = threadIdx.x; j < 2 * nb; j += blockDim.x) th[j] = theta[(size_t)r * 2 * nb + j];
  __syncthreads();
  for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < d; p += gridDim.x * blockDim.x) {
    float x = 0.0f, y = 0.0f;
    for (int n = 0; n < nb; ++n) {
      float b = basis_t[(size_t)n * d + p];
      x += b * th[n];
      y += b * th[nb + n];
    }
    xs[(size_t)r * d + p] = x;
    ys[(size_t)r * d + p] = y;
  }
}
