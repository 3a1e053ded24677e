// Kernels of stylecam's fused masked reconstruction for float features (see masked_recon_kernels.cuh),
// and the between-pass solve, which is float32 whatever the features are.
#include "masked_recon_kernels.cuh"

namespace stylecam {

STYLECAM_INSTANTIATE(float)

// One thread per (region k, channel c): statistics from the sums, temporal smoothing, coefficients
// (solve_entry in masked_recon_kernels.cuh).
__global__ void solve_kernel(const float* __restrict__ s1, const float* __restrict__ s2, const float* __restrict__ ws,
                             SolveArgs sa) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < sa.K * sa.C) solve_entry(i, s1, s2, ws, sa, true);
}

void launch_solve(const float* s1, const float* s2, const float* ws, const SolveArgs& sa, cudaStream_t s) {
  const int n = sa.K * sa.C, threads = 128;
  solve_kernel<<<(n + threads - 1) / threads, threads, 0, s>>>(s1, s2, ws, sa);
}

}  // namespace stylecam
