// Shared device helpers. Philox4x32-10 and the noise keying of src/rng.rs,
// bit for bit: the same counter layout and the same u32 words, so CPU and
// GPU agree exactly on every uniform (normals go through each device's own
// transcendental functions and agree to a few ulp).
//
//   key     = [seed lo, seed hi]
//   counter = [dim / 4, sample, item, (stream << 24) | (epoch & 0xFFFFFF)]
#pragma once
#include <stdint.h>

namespace iwtvae {

__device__ __forceinline__ uint4 philox4x32_10(uint4 c, uint2 k) {
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    if (round > 0) { k.x += W0; k.y += W1; }
    uint32_t hi0 = __umulhi(M0, c.x), lo0 = M0 * c.x;
    uint32_t hi1 = __umulhi(M1, c.z), lo1 = M1 * c.z;
    c = make_uint4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
  }
  return c;
}

// Uniform in [0, 1) with 24 random bits, exactly as src/rng.rs.
__device__ __forceinline__ float uniform_from_u32(uint32_t x) {
  return (float)(x >> 8) * (1.0f / 16777216.0f);
}

}  // namespace iwtvae
