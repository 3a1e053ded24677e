// Fused masked reconstruction for stylecam (linear and adain modes), CUDA.
//
// Pass 1 (masked_moments): for every region k and channel c, the weighted sums
//   s1[k,c] = sum_p W[k,p] F[c,p],  s2[k,c] = sum_p W[k,p] F[c,p]^2,  and  wsum[k] = sum_p W[k,p],
// accumulated in float32 whatever the feature dtype (FP16 squares overflow).
// Between the passes, the caller solves the tiny per-(region, channel) problem (K x C numbers).
// Pass 2 (masked_affine): out[c,p] = F[c,p] * sum_k W[k,p] A[k,c] + sum_k W[k,p] B[k,c],
// the blended per-pixel update of both modes (linear: A = 1, B = alpha (mu_s - mu_c);
// adain: A = 1 - alpha + alpha sigma_s/sigma_c, B = alpha (mu_s - sigma_s/sigma_c mu_c)).
// Two reads of F and one write: the fewest passes the maths allows (the statistics must be
// complete before any output pixel can be written).
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

template <typename T> __device__ __forceinline__ float to_f(T v) { return static_cast<float>(v); }
template <> __device__ __forceinline__ float to_f<at::Half>(at::Half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f<at::BFloat16>(at::BFloat16 v) { return static_cast<float>(v); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffff, v, o);
  return v;
}

// grid: (chunks, C). Each block reduces one channel over a chunk of pixels, for all K regions.
template <typename T, int K>
__global__ void moments_kernel(const T* __restrict__ f, int64_t stride_c, int64_t stride_h, int64_t stride_w,
                               const float* __restrict__ w, int H, int W, int per_block,
                               float* __restrict__ s1, float* __restrict__ s2, float* __restrict__ wsum) {
  const int c = blockIdx.y;
  const int64_t P = static_cast<int64_t>(H) * W;
  const int64_t p0 = static_cast<int64_t>(blockIdx.x) * per_block;
  const int64_t p1 = min(P, p0 + per_block);
  float a1[K], a2[K], aw[K];
#pragma unroll
  for (int k = 0; k < K; ++k) { a1[k] = 0.f; a2[k] = 0.f; aw[k] = 0.f; }
  for (int64_t p = p0 + threadIdx.x; p < p1; p += blockDim.x) {
    const int y = static_cast<int>(p / W), x = static_cast<int>(p % W);
    const float v = to_f(f[c * stride_c + y * stride_h + x * stride_w]);
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const float m = w[k * P + p];
      a1[k] += m * v;
      a2[k] += m * v * v;
      aw[k] += m;
    }
  }
  __shared__ float red[3 * K][kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    float r1 = warp_sum(a1[k]), r2 = warp_sum(a2[k]), rw = warp_sum(aw[k]);
    if (lane == 0) { red[k][warp] = r1; red[K + k][warp] = r2; red[2 * K + k][warp] = rw; }
  }
  __syncthreads();
  if (threadIdx.x < 3 * K) {
    float t = 0.f;
    for (int i = 0; i < (blockDim.x >> 5); ++i) t += red[threadIdx.x][i];
    const int which = threadIdx.x / K, k = threadIdx.x % K;
    if (which == 0) atomicAdd(&s1[k * gridDim.y + c], t);
    else if (which == 1) atomicAdd(&s2[k * gridDim.y + c], t);
    else if (c == 0) atomicAdd(&wsum[k], t);
  }
}

// grid: (pixel blocks, C). out[c,p] = f * sum_k W[k,p] A[k,c] + sum_k W[k,p] B[k,c]
template <typename T, int K>
__global__ void affine_kernel(const T* __restrict__ f, int64_t stride_c, int64_t stride_h, int64_t stride_w,
                              const float* __restrict__ w, const float* __restrict__ A, const float* __restrict__ B,
                              int C, int H, int W, T* __restrict__ out, float lo, float hi) {
  const int c = blockIdx.y;
  const int64_t P = static_cast<int64_t>(H) * W;
  float a[K], b[K];
#pragma unroll
  for (int k = 0; k < K; ++k) { a[k] = A[k * C + c]; b[k] = B[k * C + c]; }
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < P;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int y = static_cast<int>(p / W), x = static_cast<int>(p % W);
    const int64_t off = c * stride_c + y * stride_h + x * stride_w;
    const float v = to_f(f[off]);
    float ga = 0.f, gb = 0.f;
#pragma unroll
    for (int k = 0; k < K; ++k) { const float m = w[k * P + p]; ga += m * a[k]; gb += m * b[k]; }
    out[off] = static_cast<T>(fminf(fmaxf(v * ga + gb, lo), hi));
  }
}

void check_inputs(const at::Tensor& f, const at::Tensor& w) {
  TORCH_CHECK(f.is_cuda() && w.is_cuda(), "masked_recon: tensors must be on a CUDA device");
  TORCH_CHECK(f.dim() == 4 && f.size(0) == 1, "masked_recon: features must be 1 x C x H x W, got ", f.sizes());
  TORCH_CHECK(w.dim() == 3 && w.size(1) == f.size(2) && w.size(2) == f.size(3),
              "masked_recon: masks must be K x H x W at the feature size, got ", w.sizes());
  TORCH_CHECK(w.size(0) >= 1 && w.size(0) <= kMaxK, "masked_recon: 1 to 8 regions, got ", w.size(0));
  TORCH_CHECK(w.scalar_type() == at::kFloat && w.is_contiguous(), "masked_recon: masks must be contiguous float32");
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

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_moments_cuda(const at::Tensor& f, const at::Tensor& w) {
  check_inputs(f, w);
  const c10::cuda::OptionalCUDAGuard guard(f.device());
  const int K = w.size(0), C = f.size(1), H = f.size(2), W = f.size(3);
  auto opts = f.options().dtype(at::kFloat);
  at::Tensor s1 = at::zeros({K, C}, opts), s2 = at::zeros({K, C}, opts), ws = at::zeros({K}, opts);
  const int64_t P = static_cast<int64_t>(H) * W;
  const int per_block = 4096;
  const dim3 grid(static_cast<unsigned>((P + per_block - 1) / per_block), C);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "masked_moments", [&] {
    STYLECAM_DISPATCH_K(K, (moments_kernel<scalar_t, KK><<<grid, kThreads, 0, stream>>>(
        f.data_ptr<scalar_t>(), f.stride(1), f.stride(2), f.stride(3), w.data_ptr<float>(), H, W, per_block,
        s1.data_ptr<float>(), s2.data_ptr<float>(), ws.data_ptr<float>())));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {s1, s2, ws};
}

at::Tensor masked_affine_cuda(const at::Tensor& f, const at::Tensor& w, const at::Tensor& A, const at::Tensor& B) {
  check_inputs(f, w);
  const int K = w.size(0), C = f.size(1), H = f.size(2), W = f.size(3);
  TORCH_CHECK(A.sizes() == B.sizes() && A.size(0) == K && A.size(1) == C, "masked_affine: A and B must be K x C");
  const c10::cuda::OptionalCUDAGuard guard(f.device());
  at::Tensor a = A.to(at::kFloat).contiguous(), b = B.to(at::kFloat).contiguous();
  // keep the input's memory format (NCHW or channels_last); the output reuses the input's strides
  const at::Tensor fin = f.is_non_overlapping_and_dense() ? f : f.contiguous();
  at::Tensor out = at::empty_like(fin);
  const int64_t P = static_cast<int64_t>(H) * W;
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>((P + kThreads - 1) / kThreads, 4096)), C);
  const bool half = f.scalar_type() == at::kHalf;
  const float lim = half ? 65504.f : 3.0e38f;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "masked_affine", [&] {
    STYLECAM_DISPATCH_K(K, (affine_kernel<scalar_t, KK><<<grid, kThreads, 0, stream>>>(
        fin.data_ptr<scalar_t>(), fin.stride(1), fin.stride(2), fin.stride(3), w.data_ptr<float>(), a.data_ptr<float>(),
        b.data_ptr<float>(), C, H, W, out.data_ptr<scalar_t>(), -lim, lim)));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

TORCH_LIBRARY_IMPL(stylecam, CUDA, m) {
  m.impl("masked_moments", &masked_moments_cuda);
  m.impl("masked_affine", &masked_affine_cuda);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {}
