// Kernels of stylecam's fused masked reconstruction for float features (see masked_recon_kernels.cuh),
// and the between-pass solve, which is float32 whatever the features are.
#include "masked_recon_kernels.cuh"

namespace stylecam {

STYLECAM_INSTANTIATE(float)

// One thread per (region k, channel c): statistics from the sums, temporal smoothing, coefficients.
// mode 0: linear, exact; 1: linear, `iterations` steps of the paper's iteration; 2: adain.
__global__ void solve_kernel(const float* __restrict__ s1, const float* __restrict__ s2, const float* __restrict__ ws,
                             const float* __restrict__ smean, const float* __restrict__ sstd, int K, int C,
                             float alpha, int mode, int iterations, float beta, float momentum,
                             const float* __restrict__ prev_mean, const float* __restrict__ prev_var,
                             const float* __restrict__ off0, float* __restrict__ mean_out,
                             float* __restrict__ var_out, float* __restrict__ off_out,
                             float* __restrict__ A, float* __restrict__ B) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= K * C) return;
  const int k = i / C;
  const float nz = fmaxf(ws[k], kEps);
  float mean = s1[i] / nz;
  float var = fmaxf(s2[i] / nz - mean * mean, 0.f);
  if (prev_mean != nullptr) {                   // warm start: m * previous + (1 - m) * current
    mean = momentum * prev_mean[i] + (1.f - momentum) * mean;
    var = momentum * prev_var[i] + (1.f - momentum) * var;
  }
  mean_out[i] = mean;
  var_out[i] = var;
  const float mus = smean[i];
  if (mode == 2) {
    const float a = sstd[i] / sqrtf(var + kEps);
    A[i] = (1.f - alpha) + alpha * a;
    B[i] = alpha * (mus - a * mean);
    off_out[i] = 0.f;
  } else if (mode == 0) {
    A[i] = 1.f;
    B[i] = alpha * (mus - mean);
    off_out[i] = 0.f;
  } else {                                      // the region mean's scalar recurrence, N steps (paper §3.1)
    float mu = mean + (off0 != nullptr ? off0[i] : 0.f), prev = mu;
    for (int t = 0; t < iterations; ++t) { prev = mu; mu = mean - beta * (mu - mus); }
    A[i] = 1.f;
    B[i] = iterations > 0 ? -beta * (prev - mus) : mu - mean;
    off_out[i] = mu - mean;
  }
}

void launch_solve(const float* s1, const float* s2, const float* ws, const float* smean, const float* sstd, int K, int C,
                  float alpha, int mode, int iterations, float momentum, const float* prev_mean, const float* prev_var,
                  const float* off0, float* mean_out, float* var_out, float* off_out, float* A, float* B,
                  cudaStream_t s) {
  const int n = K * C, threads = 128;
  const float beta = mode == 1 ? alpha / (1.f - alpha) : 0.f;
  solve_kernel<<<(n + threads - 1) / threads, threads, 0, s>>>(s1, s2, ws, smean, sstd, K, C, alpha, mode, iterations,
                                                                beta, momentum, prev_mean, prev_var, off0, mean_out,
                                                                var_out, off_out, A, B);
}

}  // namespace stylecam
