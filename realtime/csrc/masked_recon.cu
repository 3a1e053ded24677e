// Fused masked reconstruction for stylecam (linear and adain modes), CUDA.
//
// Pass 1 (moments_kernel): for every region k and channel c, the weighted sums
//   s1[k,c] = sum_p W[k,p] F[c,p],  s2[k,c] = sum_p W[k,p] F[c,p]^2,  and  wsum[k] = sum_p W[k,p],
// accumulated in float32 whatever the feature dtype (FP16 squares overflow).
// Between the passes (solve_kernel, one thread per (region, channel), K x C numbers): the region
// statistics, their temporal smoothing with the previous frame's (warm start), and the per-region
// coefficients A, B of the mode -- for the paper's iterative linear form the exact scalar
// recurrence of its N iterations, so 500 iterations cost no more than one.
// Pass 2 (affine_kernel): out[c,p] = F[c,p] * sum_k W[k,p] A[k,c] + sum_k W[k,p] B[k,c],
// the blended per-pixel update of both modes (linear: A = 1, B = alpha (mu_s - mu_c);
// adain: A = 1 - alpha + alpha sigma_s/sigma_c, B = alpha (mu_s - sigma_s/sigma_c mu_c)).
// Two reads of F and one write: the fewest passes the maths allows (the statistics must be
// complete before any output pixel can be written).
//
// Both big passes give each block a tile of pixels and a group of channels: a thread loads the K
// mask values of its PPT pixels into registers once and reuses them for every channel of the
// group, so the masks are not re-read per channel.  Pass 1 reduces within warps (shuffles), then
// within the block (shared memory), then one atomicAdd per block and sum into global memory.
//
// Launched on PyTorch's current stream; memory comes from PyTorch's allocator; any H, W,
// K <= 8, NCHW or channels_last (through strides), FP16 / BF16 / FP32 features.
#include <torch/extension.h>
// c10's CUDA headers only: ATen/cuda/CUDAContext.h pulls in cuBLAS/cuSPARSE headers, which a
// minimal CUDA toolkit (nvcc + cudart) does not have.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

namespace {

constexpr int kMaxK = 8;
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxGroup = 64;        // channels per block, at most
constexpr float kEps = 1e-5f;        // realtime/reconstruct.py EPS

template <int K> struct Pixels { static constexpr int value = K <= 4 ? 16 : 8; };   // pixels per thread

template <typename T> __device__ __forceinline__ float to_f(T v) { return static_cast<float>(v); }
template <> __device__ __forceinline__ float to_f<at::Half>(at::Half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f<at::BFloat16>(at::BFloat16 v) { return static_cast<float>(v); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  return v;
}

// A thread's PPT pixels of a tile: offsets (from the channel's base, through the strides) and the
// K mask weights of each, zero for pixels past the end.
template <int K, int PPT>
__device__ __forceinline__ void load_tile(const float* __restrict__ w, int64_t P, int W, int64_t sh, int64_t sw,
                                          int64_t tile0, int64_t (&off)[PPT], float (&m)[K][PPT]) {
#pragma unroll
  for (int i = 0; i < PPT; ++i) {
    const int64_t p = tile0 + static_cast<int64_t>(i) * kThreads + threadIdx.x;
    const bool ok = p < P;
    const int64_t q = ok ? p : 0;
    off[i] = (q / W) * sh + (q % W) * sw;
#pragma unroll
    for (int k = 0; k < K; ++k) m[k][i] = ok ? w[k * P + q] : 0.f;
  }
}

// grid: (pixel tiles, channel groups); acc (shared): [2K + 1][group] -> s1, s2 (and wsum).
template <typename T, int K>
__global__ void __launch_bounds__(kThreads) moments_kernel(
    const T* __restrict__ f, int64_t sc, int64_t sh, int64_t sw, const float* __restrict__ w, int C, int H, int W,
    int group, float* __restrict__ s1, float* __restrict__ s2, float* __restrict__ wsum) {
  constexpr int PPT = Pixels<K>::value;
  __shared__ float acc[2 * K + 1][kMaxGroup];
  const int64_t P = static_cast<int64_t>(H) * W;
  const int64_t tile0 = static_cast<int64_t>(blockIdx.x) * kThreads * PPT;
  const int c0 = blockIdx.y * group, nc = min(group, C - c0);
  for (int i = threadIdx.x; i < (2 * K + 1) * kMaxGroup; i += kThreads) (&acc[0][0])[i] = 0.f;
  int64_t off[PPT];
  float m[K][PPT];
  load_tile<K, PPT>(w, P, W, sh, sw, tile0, off, m);
  __syncthreads();
  const int lane = threadIdx.x & 31;
  if (blockIdx.y == 0) {                        // region areas, once per pixel tile
#pragma unroll
    for (int k = 0; k < K; ++k) {
      float t = 0.f;
#pragma unroll
      for (int i = 0; i < PPT; ++i) t += m[k][i];
      t = warp_sum(t);
      if (lane == 0) atomicAdd(&acc[2 * K][k], t);
    }
  }
  for (int j = 0; j < nc; ++j) {
    const T* fc = f + static_cast<int64_t>(c0 + j) * sc;
    float v[PPT];
#pragma unroll
    for (int i = 0; i < PPT; ++i) v[i] = to_f(fc[off[i]]);   // past the end: offset 0, weight 0
    float a1[K], a2[K];
#pragma unroll
    for (int k = 0; k < K; ++k) { a1[k] = 0.f; a2[k] = 0.f; }
#pragma unroll
    for (int i = 0; i < PPT; ++i) {
      const float vv = v[i] * v[i];
#pragma unroll
      for (int k = 0; k < K; ++k) { a1[k] = fmaf(m[k][i], v[i], a1[k]); a2[k] = fmaf(m[k][i], vv, a2[k]); }
    }
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const float r1 = warp_sum(a1[k]), r2 = warp_sum(a2[k]);
      if (lane == 0) { atomicAdd(&acc[k][j], r1); atomicAdd(&acc[K + k][j], r2); }
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < 2 * K * nc; i += kThreads) {
    const int row = i / nc, j = i % nc, k = row % K;
    float* dst = row < K ? s1 : s2;
    atomicAdd(&dst[k * C + c0 + j], acc[row][j]);
  }
  if (blockIdx.y == 0 && threadIdx.x < K) atomicAdd(&wsum[threadIdx.x], acc[2 * K][threadIdx.x]);
}

// grid: (pixel tiles, channel groups). out[c,p] = f * sum_k W[k,p] A[k,c] + sum_k W[k,p] B[k,c]
template <typename T, int K>
__global__ void __launch_bounds__(kThreads) affine_kernel(
    const T* __restrict__ f, int64_t sc, int64_t sh, int64_t sw, const float* __restrict__ w,
    const float* __restrict__ A, const float* __restrict__ B, int C, int H, int W, int group,
    T* __restrict__ out, float lo, float hi) {
  constexpr int PPT = Pixels<K>::value;
  const int64_t P = static_cast<int64_t>(H) * W;
  const int64_t tile0 = static_cast<int64_t>(blockIdx.x) * kThreads * PPT;
  const int c0 = blockIdx.y * group, nc = min(group, C - c0);
  int64_t off[PPT];
  float m[K][PPT];
  load_tile<K, PPT>(w, P, W, sh, sw, tile0, off, m);
  for (int j = 0; j < nc; ++j) {
    const int c = c0 + j;
    float a[K], b[K];
#pragma unroll
    for (int k = 0; k < K; ++k) { a[k] = __ldg(&A[k * C + c]); b[k] = __ldg(&B[k * C + c]); }
    const T* fc = f + static_cast<int64_t>(c) * sc;
    T* oc = out + static_cast<int64_t>(c) * sc;
    float v[PPT];
#pragma unroll
    for (int i = 0; i < PPT; ++i) v[i] = tile0 + i * kThreads + threadIdx.x < P ? to_f(fc[off[i]]) : 0.f;
#pragma unroll
    for (int i = 0; i < PPT; ++i) {
      if (tile0 + i * kThreads + threadIdx.x < P) {
        float ga = 0.f, gb = 0.f;
#pragma unroll
        for (int k = 0; k < K; ++k) { ga = fmaf(m[k][i], a[k], ga); gb = fmaf(m[k][i], b[k], gb); }
        oc[off[i]] = static_cast<T>(fminf(fmaxf(fmaf(v[i], ga, gb), lo), hi));
      }
    }
  }
}

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
  } else {                                      // the region mean's scalar recurrence, N steps
    float mu = mean + (off0 != nullptr ? off0[i] : 0.f), prev = mu;
    for (int t = 0; t < iterations; ++t) { prev = mu; mu = mean - beta * (mu - mus); }
    A[i] = 1.f;
    B[i] = iterations > 0 ? -beta * (prev - mus) : mu - mean;
    off_out[i] = mu - mean;
  }
}

void check_inputs(const at::Tensor& f, const at::Tensor& w) {
  TORCH_CHECK(f.is_cuda() && w.is_cuda(), "masked_recon: tensors must be on a CUDA device");
  TORCH_CHECK(f.dim() == 4 && f.size(0) == 1, "masked_recon: features must be 1 x C x H x W, got ", f.sizes());
  TORCH_CHECK(w.dim() == 3 && w.size(1) == f.size(2) && w.size(2) == f.size(3),
              "masked_recon: masks must be K x H x W at the feature size, got ", w.sizes());
  TORCH_CHECK(w.size(0) >= 1 && w.size(0) <= kMaxK, "masked_recon: 1 to 8 regions, got ", w.size(0));
  TORCH_CHECK(w.scalar_type() == at::kFloat && w.is_contiguous(), "masked_recon: masks must be contiguous float32");
  TORCH_CHECK(f.get_device() == w.get_device(), "masked_recon: features and masks on different devices");
}

#define STYLECAM_DISPATCH_K(K, ...)                         \
  switch (K) {                                              \
    case 1: { constexpr int KK = 1; __VA_ARGS__; } break;   \
    case 2: { constexpr int KK = 2; __VA_ARGS__; } break;   \
    case 3: { constexpr int KK = 3; __VA_ARGS__; } break;   \
    case 4: { constexpr int KK = 4; __VA_ARGS__; } break;   \
    case 5: { constexpr int KK = 5; __VA_ARGS__; } break;   \
    case 6: { constexpr int KK = 6; __VA_ARGS__; } break;   \
    case 7: { constexpr int KK = 7; __VA_ARGS__; } break;   \
    default: { constexpr int KK = 8; __VA_ARGS__; } break;  \
  }

int pixels_per_thread(int K) { return K <= 4 ? 16 : 8; }

// Launch shape of both passes: tiles of kThreads * PPT pixels times groups of channels, with
// about four blocks per multiprocessor (fewer, larger groups re-read the masks less often).
struct Shape { int tiles, groups, group; };
Shape launch_shape(int64_t P, int C, int K, int device) {
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t tile = static_cast<int64_t>(kThreads) * pixels_per_thread(K);
  const int tiles = static_cast<int>((P + tile - 1) / tile);
  int want = static_cast<int>((4LL * sms + tiles - 1) / tiles);
  want = std::max(1, std::min(want, C));
  int group = std::min((C + want - 1) / want, kMaxGroup);
  const int groups = (C + group - 1) / group;
  return {tiles, groups, group};
}

// s1, s2, wsum must be zero on entry (one memset of a single buffer)
void launch_moments(const at::Tensor& f, const at::Tensor& w, float* s1, float* s2, float* ws, cudaStream_t stream) {
  const int K = w.size(0), C = f.size(1), H = f.size(2), W = f.size(3);
  const Shape s = launch_shape(static_cast<int64_t>(H) * W, C, K, f.get_device());
  const dim3 grid(s.tiles, s.groups);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "masked_moments", [&] {
    STYLECAM_DISPATCH_K(K, (moments_kernel<scalar_t, KK><<<grid, kThreads, 0, stream>>>(
        f.data_ptr<scalar_t>(), f.stride(1), f.stride(2), f.stride(3), w.data_ptr<float>(), C, H, W, s.group,
        s1, s2, ws)));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// out must have fin's strides
void launch_affine(const at::Tensor& fin, const at::Tensor& w, const float* A, const float* B, at::Tensor& out,
                   cudaStream_t stream) {
  const int K = w.size(0), C = fin.size(1), H = fin.size(2), W = fin.size(3);
  const Shape s = launch_shape(static_cast<int64_t>(H) * W, C, K, fin.get_device());
  const dim3 grid(s.tiles, s.groups);
  const float lim = fin.scalar_type() == at::kHalf ? 65504.f : 3.0e38f;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, fin.scalar_type(), "masked_affine", [&] {
    STYLECAM_DISPATCH_K(K, (affine_kernel<scalar_t, KK><<<grid, kThreads, 0, stream>>>(
        fin.data_ptr<scalar_t>(), fin.stride(1), fin.stride(2), fin.stride(3), w.data_ptr<float>(), A, B, C, H, W,
        s.group, out.data_ptr<scalar_t>(), -lim, lim)));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// a dense tensor keeps its memory format (NCHW or channels_last); anything else is made contiguous
at::Tensor dense(const at::Tensor& f) { return f.is_non_overlapping_and_dense() ? f : f.contiguous(); }

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_moments_cuda(const at::Tensor& f, const at::Tensor& w) {
  check_inputs(f, w);
  const c10::cuda::OptionalCUDAGuard guard(f.device());
  const int64_t K = w.size(0), C = f.size(1);
  at::Tensor buf = at::zeros({2 * K * C + K}, f.options().dtype(at::kFloat));
  float* p = buf.data_ptr<float>();
  launch_moments(dense(f), w, p, p + K * C, p + 2 * K * C, c10::cuda::getCurrentCUDAStream());
  return {buf.narrow(0, 0, K * C).view({K, C}), buf.narrow(0, K * C, K * C).view({K, C}), buf.narrow(0, 2 * K * C, K)};
}

at::Tensor masked_affine_cuda(const at::Tensor& f, const at::Tensor& w, const at::Tensor& A, const at::Tensor& B) {
  check_inputs(f, w);
  const int64_t K = w.size(0), C = f.size(1);
  TORCH_CHECK(A.sizes() == B.sizes() && A.size(0) == K && A.size(1) == C, "masked_affine: A and B must be K x C");
  const c10::cuda::OptionalCUDAGuard guard(f.device());
  at::Tensor a = A.to(f.device(), at::kFloat).contiguous(), b = B.to(f.device(), at::kFloat).contiguous();
  const at::Tensor fin = dense(f);
  at::Tensor out = at::empty_like(fin);
  launch_affine(fin, w, a.data_ptr<float>(), b.data_ptr<float>(), out, c10::cuda::getCurrentCUDAStream());
  return out;
}

// The whole frame in four launches (memset, pass 1, solve, pass 2) from one call.
// Returns (out, wsum, mean, var, offset): the statistics used (after smoothing) and, for the
// iterative linear mode, the region mean's offset mu^N - mu_c for the next frame's warm start.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_recon_cuda(
    const at::Tensor& f, const at::Tensor& w, const at::Tensor& style_mean, const at::Tensor& style_std,
    double alpha, int64_t mode, int64_t iterations, double momentum, const std::optional<at::Tensor>& prev_mean,
    const std::optional<at::Tensor>& prev_var, const std::optional<at::Tensor>& offset0) {
  check_inputs(f, w);
  const int64_t K = w.size(0), C = f.size(1);
  TORCH_CHECK(mode >= 0 && mode <= 2, "fused_recon: mode must be 0 (linear), 1 (linear, iterative) or 2 (adain)");
  TORCH_CHECK(mode != 1 || (alpha >= 0 && alpha < 1), "fused_recon: the iterative linear solve needs strength in [0, 1)");
  auto kc = [&](const at::Tensor& t, const char* what) {
    TORCH_CHECK(t.dim() == 2 && t.size(0) == K && t.size(1) == C, "fused_recon: ", what, " must be K x C = ", K, " x ",
                C, ", got ", t.sizes());
    return t.to(f.device(), at::kFloat).contiguous();
  };
  const c10::cuda::OptionalCUDAGuard guard(f.device());
  const at::Tensor sm = kc(style_mean, "style_mean"), sd = kc(style_std, "style_std");
  at::Tensor pm, pv, o0;
  if (prev_mean.has_value() != prev_var.has_value()) TORCH_CHECK(false, "fused_recon: give both prev_mean and prev_var");
  if (prev_mean.has_value()) { pm = kc(*prev_mean, "prev_mean"); pv = kc(*prev_var, "prev_var"); }
  if (offset0.has_value()) o0 = kc(*offset0, "offset0");
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const auto fopt = f.options().dtype(at::kFloat);
  at::Tensor sums = at::zeros({2 * K * C + K}, fopt);
  at::Tensor res = at::empty({5, K, C}, fopt);           // mean, var, offset, A, B
  float* p = sums.data_ptr<float>();
  const at::Tensor fin = dense(f);
  launch_moments(fin, w, p, p + K * C, p + 2 * K * C, stream);
  float* r = res.data_ptr<float>();
  const int n = static_cast<int>(K * C), threads = 128;
  const float a = static_cast<float>(alpha);
  const float beta = mode == 1 ? a / (1.f - a) : 0.f;
  solve_kernel<<<(n + threads - 1) / threads, threads, 0, stream>>>(
      p, p + K * C, p + 2 * K * C, sm.data_ptr<float>(), sd.data_ptr<float>(), static_cast<int>(K), static_cast<int>(C),
      a, static_cast<int>(mode), static_cast<int>(iterations), beta, static_cast<float>(momentum),
      pm.defined() ? pm.data_ptr<float>() : nullptr, pv.defined() ? pv.data_ptr<float>() : nullptr,
      o0.defined() ? o0.data_ptr<float>() : nullptr, r, r + n, r + 2 * n, r + 3 * n, r + 4 * n);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  at::Tensor out = at::empty_like(fin);
  launch_affine(fin, w, r + 3 * n, r + 4 * n, out, stream);
  return {out, sums.narrow(0, 2 * K * C, K), res[0], res[1], res[2]};
}

TORCH_LIBRARY_IMPL(stylecam, CUDA, m) {
  m.impl("masked_moments", &masked_moments_cuda);
  m.impl("masked_affine", &masked_affine_cuda);
  m.impl("fused_recon", &fused_recon_cuda);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {}
