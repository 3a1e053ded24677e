// Fused masked reconstruction for stylecam (linear and adain modes), CUDA: the PyTorch ops.
//
// Pass 1 (moments): for every region k and channel c, the weighted sums
//   s1[k,c] = sum_p W[k,p] F[c,p],  s2[k,c] = sum_p W[k,p] F[c,p]^2,  and  wsum[k] = sum_p W[k,p],
// accumulated in float32 whatever the feature dtype (FP16 squares overflow).
// Between the passes (solve: K x C numbers, in pass 2's prologue, each block its own channels'; or
// solve_kernel, one thread per (region, channel), with STYLECAM_MOMENTS=...+solve1): the region
// statistics, their temporal smoothing with the previous frame's (warm start), and the per-region
// coefficients A, B of the mode -- for the paper's iterative linear form the exact scalar
// recurrence of its N iterations, so 500 iterations cost no more than one.
// Pass 2 (affine): out[c,p] = F[c,p] * sum_k W[k,p] A[k,c] + sum_k W[k,p] B[k,c],
// the blended per-pixel update of both modes (linear: A = 1, B = alpha (mu_s - mu_c);
// adain: A = 1 - alpha + alpha sigma_s/sigma_c, B = alpha (mu_s - sigma_s/sigma_c mu_c)).
// Two reads of F and one write: the fewest passes the maths allows (the statistics must be
// complete before any output pixel can be written).  Pass 2 also raises its results to an optional
// floor (the stylizer's clamp at zero: ReLU features are never negative).
//
// The kernels live in masked_recon_kernels.cuh, instantiated per dtype in masked_recon_{f32,f16,
// bf16}.cu.  Launched on PyTorch's current stream; memory comes from PyTorch's allocator; any H,
// W, K <= 8, NCHW or channels_last (through strides), FP16 / BF16 / FP32 features.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <torch/extension.h>
// c10's CUDA headers only: ATen/cuda/CUDAContext.h pulls in cuBLAS/cuSPARSE headers, which a
// minimal CUDA toolkit (nvcc + cudart) does not have.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "masked_recon_kernels.cuh"

using stylecam::Geometry;
using stylecam::kMaxK;
using stylecam::SolveArgs;

namespace {

// Error messages are formatted here with snprintf and handed to TORCH_CHECK as ONE const char*,
// which c10 passes through untouched.  TORCH_CHECK's own formatting of extra arguments (numbers,
// f.sizes()) streams them through std::ostream code compiled into this library, and on the lent
// device (torch 2.11 + nvcc 13.0) that crashed the process with SIGSEGV instead of raising:
// cuda-gdb put the fault in check_inputs -> c10::detail::_str_wrapper<const char*,
// ArrayRef<long>>::call -> std::ostream::_M_insert<long> (README: "Fixed: the op's error path").
#define STYLECAM_CHECK(cond, ...)                                  \
  do {                                                             \
    if (!(cond)) {                                                 \
      char stylecam_msg_[512];                                     \
      std::snprintf(stylecam_msg_, sizeof stylecam_msg_, __VA_ARGS__); \
      TORCH_CHECK(false, static_cast<const char*>(stylecam_msg_)); \
    }                                                              \
  } while (0)

// "[1, 8, 5, 7]" without iostreams
std::string shape(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

void check_inputs(const at::Tensor& f, const at::Tensor& w) {
  STYLECAM_CHECK(f.is_cuda() && w.is_cuda(), "masked_recon: tensors must be on a CUDA device");
  STYLECAM_CHECK(f.dim() == 4 && f.size(0) == 1, "masked_recon: features must be 1 x C x H x W, got %s",
                 shape(f).c_str());
  STYLECAM_CHECK(w.dim() == 3 && w.size(1) == f.size(2) && w.size(2) == f.size(3),
                 "masked_recon: masks must be K x H x W at the feature size, got %s for features %s",
                 shape(w).c_str(), shape(f).c_str());
  STYLECAM_CHECK(w.size(0) >= 1 && w.size(0) <= kMaxK, "masked_recon: 1 to 8 regions, got %lld",
                 static_cast<long long>(w.size(0)));
  STYLECAM_CHECK(w.scalar_type() == at::kFloat && w.is_contiguous(), "masked_recon: masks must be contiguous float32");
  STYLECAM_CHECK(f.get_device() == w.get_device(), "masked_recon: features and masks on different devices");
  STYLECAM_CHECK(f.size(2) * f.size(3) < (int64_t{1} << 31), "masked_recon: at most 2^31 pixels, got %s",
                 shape(f).c_str());
  STYLECAM_CHECK(f.scalar_type() == at::kFloat || f.scalar_type() == at::kHalf || f.scalar_type() == at::kBFloat16,
                 "masked_recon: features must be float32, float16 or bfloat16, got %s", c10::toString(f.scalar_type()));
}

// a dense tensor keeps its memory format (NCHW or channels_last); anything else is made contiguous
at::Tensor dense(const at::Tensor& f) { return f.is_non_overlapping_and_dense() ? f : f.contiguous(); }

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Launch choices, set from Python (kernels.set_tuning; STYLECAM_MOMENTS when the extension loads)
// instead of read from the environment on every call.
// pass1: pass 1's layout on the vector path (stylecam::Pass1; kernels.py maps the variant names).
// The default, the variant "auto" = "quad+even": lanes with 4 lanes per channel, the largest tile,
// spans filling whole waves evenly.  Chosen on the lent H100 in session 9 (benchmarks/kernel.py,
// CUDA graphs, adain/linear, % of copy bandwidth, all layouts in one run): quad+even 76/76 (480p),
// 78/78 (720p), 80/80 (1080p); the session-6..8 default (lanes, the largest tile, half of it with
// prefetch past one wave of blocks) 75/75, 75/76, 80/81; quad alone 72/73, 79/78, 77/77.  Within two
// points of the best at every size, where each of the others loses three or more somewhere.  Others:
// warp (moments_kernel, a warp per channel, the first layout: 56-66 %), lanes1 (lpc 1, the largest
// tile), prefetch2 (lpc 1, half the tile, loads in flight before the mask stage), quadpf (quad with
// the loads in flight; 43 registers against 40, no spills: ptxas, FP16, K = 3), written after session
// 9's run for pass 1's low occupancy (0.58-0.67 of a wave at 720p); timed on the H100 in sessions 11
// and 12: a tie at 720p and 1080p, 3 points lost at 480p, so opt-in.
stylecam::Pass1 tuning_pass1{true, false, 4, 1, true, false, false, false, false};
// solve_in_pass2: fused_recon's between-pass solve in pass 2's prologue (each block solving its own
// channels) instead of a kernel of its own: the default since session 8 timed it on the H100 (720p
// 71-72 % of copy bandwidth against 69 %; 480p +4, 1080p +1 points); false = solve_kernel between
bool tuning_solve_in_pass2 = true;

// pdl: fused_recon's kernels as programmatic dependent launches on sm_90+ (masked_recon_kernels.cuh,
// launch): pass 1 on the lanes path starts while the memset of its sums finishes, and pass 2 loads
// its masks while pass 1 finishes, waiting (griddepcontrol.wait) only before it reads the sums.  At
// 720p on the H100 the op was 42 us of which each kernel boundary costs a few.  On by default since
// session 12 timed it there (benchmarks/kernel.py, CUDA graphs, adain/linear, % of copy bandwidth):
// 480p 72/73 against 71/71, 720p 77/77 against 75/75, 1080p 78/78 against 77/77.
bool tuning_pdl = true;
// early (with pdl): pass 1 lets pass 2 launch before its loop (into the slots pass 1 leaves free), and
// pass 2 loads its first channel's features before its wait.  Written in session 12 after the +pdl
// run, without a GPU: not yet timed, off by default.
bool tuning_early = false;

// false for a combination no kernel is built for, which changes nothing
// l2 (+l2): L2 eviction hints; p256 (+p256): pass 1's loads with L2's 256-byte prefetch; each built for
// quad only (lanes, lpc 4, no prefetch; masked_recon_kernels.cuh, l2_policy and ldg_256), not both.
// Written in session 15 without a GPU: not yet timed, off by default.
// rev (+rev): pass 2 in pass 1's quad layout, its spans walked backwards (affine_lanes_kernel); built
// for quad only, not with l2.  Written in session 23 without a GPU: not yet timed, off by default.
bool set_tuning(bool lanes, bool prefetch, int lpc, int tile_div, bool even, bool solve_in_pass2, bool pdl,
                bool early, bool fill, bool l2, bool p256, bool rev) {
  // the moments_lanes_kernel instantiations launch_moments has: (lpc, prefetch, tile_div)
  const bool built = lanes ? ((lpc == 1 && !prefetch && tile_div == 1) || (lpc == 1 && prefetch && tile_div == 2) ||
                              (lpc == 4 && tile_div == 1))
                           : (!prefetch && lpc == 1 && tile_div == 1 && !even);   // the warp layout has none
  const bool quad = lanes && lpc == 4 && !prefetch;
  if (!built || (early && !pdl) || (fill && !even) || ((l2 || p256 || rev) && !quad) || (l2 && p256) || (l2 && rev))
    return false;
  tuning_pass1 = {lanes, prefetch, lpc, tile_div, even, fill, l2, p256, rev};
  tuning_solve_in_pass2 = solve_in_pass2;
  tuning_pdl = pdl;
  tuning_early = early;
  return true;
}

// A device attribute, asked once per (attribute, device) for the first 64 devices
template <cudaDeviceAttr Attr>
int device_attribute(int device) {
  static int cache[64] = {0};
  if (device >= 0 && device < 64 && cache[device] != 0) return cache[device];
  int n = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, Attr, device));
  if (device >= 0 && device < 64) cache[device] = n;
  return n;
}

// pdl: programmatic dependent launches asked for (fused_recon with tuning_pdl); only on sm_90+.
// hints: the +l2 hints may be used (fused_recon only: pass 1's evict_last is undone by pass 2's
// evict_first reads, which the standalone masked_moments op has no pass 2 to do)
Geometry geometry(const at::Tensor& f, int K, const at::Tensor* out = nullptr, bool pdl = false,
                  bool hints = false) {
  const int dev = f.get_device(), sms = device_attribute<cudaDevAttrMultiProcessorCount>(dev);
  // programmatic launches need compute capability 9+
  const bool pdl_here = pdl && device_attribute<cudaDevAttrComputeCapabilityMajor>(dev) >= 9;
  const int64_t P = f.size(2) * f.size(3), vec = 16 / static_cast<int64_t>(f.element_size());
  stylecam::Pass1 p1 = tuning_pass1;
  p1.l2 = p1.l2 && hints;
  const bool v = f.is_contiguous() && P % vec == 0 && aligned16(f.data_ptr()) &&
                 (out == nullptr || aligned16(out->data_ptr()));
  return {K, static_cast<int>(f.size(1)), static_cast<int>(f.size(2)), static_cast<int>(f.size(3)),
          f.stride(1), f.stride(2), f.stride(3), v, p1, sms, pdl_here, pdl_here && tuning_early};
}

void moments(const at::Tensor& f, const at::Tensor& w, float* s1, float* s2, float* ws, cudaStream_t s,
             bool pdl = false, bool hints = false) {
  const Geometry g = geometry(f, w.size(0), nullptr, pdl, hints);
  const float* wp = w.data_ptr<float>();
  if (f.scalar_type() == at::kHalf)
    stylecam::launch_moments(reinterpret_cast<const __half*>(f.data_ptr<at::Half>()), wp, g, s1, s2, ws, s);
  else if (f.scalar_type() == at::kBFloat16)
    stylecam::launch_moments(reinterpret_cast<const __nv_bfloat16*>(f.data_ptr<at::BFloat16>()), wp, g, s1, s2, ws, s);
  else
    stylecam::launch_moments(f.data_ptr<float>(), wp, g, s1, s2, ws, s);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// out must have f's strides; results below `floor` are raised to it (the stylizer's clamp at zero,
// done here instead of in a pass of its own), and FP16 results are kept finite
// `solve` (optional): pass 2 solves its coefficients from pass 1's sums itself (A and B unused)
void affine(const at::Tensor& f, const at::Tensor& w, const float* A, const float* B, at::Tensor& out, float floor,
            cudaStream_t s, const float* s1 = nullptr, const float* s2 = nullptr, const float* ws = nullptr,
            const SolveArgs* solve = nullptr, bool pdl = false, bool hints = false) {
  const SolveArgs none{};
  const SolveArgs& sa = solve != nullptr ? *solve : none;
  if (solve == nullptr) s1 = s2 = ws = nullptr;
  const Geometry g = geometry(f, w.size(0), &out, pdl, hints);
  const float* wp = w.data_ptr<float>();
  if (f.scalar_type() == at::kHalf)
    stylecam::launch_affine(reinterpret_cast<const __half*>(f.data_ptr<at::Half>()), wp, A, B, g,
                            reinterpret_cast<__half*>(out.data_ptr<at::Half>()), std::fmax(floor, -65504.f), 65504.f,
                            s1, s2, ws, sa, s);
  else if (f.scalar_type() == at::kBFloat16)
    stylecam::launch_affine(reinterpret_cast<const __nv_bfloat16*>(f.data_ptr<at::BFloat16>()), wp, A, B, g,
                            reinterpret_cast<__nv_bfloat16*>(out.data_ptr<at::BFloat16>()), std::fmax(floor, -3.0e38f),
                            3.0e38f, s1, s2, ws, sa, s);
  else
    stylecam::launch_affine(f.data_ptr<float>(), wp, A, B, g, out.data_ptr<float>(), std::fmax(floor, -3.0e38f),
                            3.0e38f, s1, s2, ws, sa, s);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_moments_cuda(const at::Tensor& f, const at::Tensor& w) {
  check_inputs(f, w);
  const c10::cuda::OptionalCUDAGuard guard(f.device());
  const int64_t K = w.size(0), C = f.size(1);
  // three allocations, not views of one: the schema promises outputs that share no memory
  // (torch.library.opcheck's schema test on the H100 caught the views)
  const auto fopt = f.options().dtype(at::kFloat);
  at::Tensor s1 = at::zeros({K, C}, fopt), s2 = at::zeros({K, C}, fopt), ws = at::zeros({K}, fopt);
  moments(dense(f), w, s1.data_ptr<float>(), s2.data_ptr<float>(), ws.data_ptr<float>(),
          c10::cuda::getCurrentCUDAStream());
  return {s1, s2, ws};
}

at::Tensor masked_affine_cuda(const at::Tensor& f, const at::Tensor& w, const at::Tensor& A, const at::Tensor& B) {
  check_inputs(f, w);
  const int64_t K = w.size(0), C = f.size(1);
  STYLECAM_CHECK(A.sizes() == B.sizes() && A.size(0) == K && A.size(1) == C, "masked_affine: A and B must be K x C");
  const c10::cuda::OptionalCUDAGuard guard(f.device());
  at::Tensor a = A.to(f.device(), at::kFloat).contiguous(), b = B.to(f.device(), at::kFloat).contiguous();
  const at::Tensor fin = dense(f);
  at::Tensor out = at::empty_like(fin);
  affine(fin, w, a.data_ptr<float>(), b.data_ptr<float>(), out, -3.0e38f, c10::cuda::getCurrentCUDAStream());
  return out;
}

// The whole frame from one call: memset, pass 1, pass 2 solving in its prologue (or solve, pass 2).  Returns (out, wsum, mean, var,
// offset): the statistics used (after smoothing) and, for the iterative linear mode, the region
// mean's offset mu^N - mu_c for the next frame's warm start.  `floor` (optional): results below it are raised to it in pass 2.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_recon_cuda(
    const at::Tensor& f, const at::Tensor& w, const at::Tensor& style_mean, const at::Tensor& style_std,
    double alpha, int64_t mode, int64_t iterations, double momentum, const std::optional<at::Tensor>& prev_mean,
    const std::optional<at::Tensor>& prev_var, const std::optional<at::Tensor>& offset0,
    std::optional<double> floor) {
  check_inputs(f, w);
  const int64_t K = w.size(0), C = f.size(1);
  STYLECAM_CHECK(mode >= 0 && mode <= 2, "fused_recon: mode must be 0 (linear), 1 (linear, iterative) or 2 (adain)");
  STYLECAM_CHECK(mode != 1 || (alpha >= 0 && alpha < 1),
                 "fused_recon: the iterative linear solve needs strength in [0, 1)");
  auto kc = [&](const at::Tensor& t, const char* what) {
    STYLECAM_CHECK(t.dim() == 2 && t.size(0) == K && t.size(1) == C, "fused_recon: %s must be K x C = %lld x %lld, got %s",
                   what, static_cast<long long>(K), static_cast<long long>(C), shape(t).c_str());
    return t.to(f.device(), at::kFloat).contiguous();
  };
  const c10::cuda::OptionalCUDAGuard guard(f.device());
  const at::Tensor sm = kc(style_mean, "style_mean"), sd = kc(style_std, "style_std");
  at::Tensor pm, pv, o0;
  STYLECAM_CHECK(prev_mean.has_value() == prev_var.has_value(), "fused_recon: give both prev_mean and prev_var");
  if (prev_mean.has_value()) { pm = kc(*prev_mean, "prev_mean"); pv = kc(*prev_var, "prev_var"); }
  if (offset0.has_value()) o0 = kc(*offset0, "offset0");
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const auto fopt = f.options().dtype(at::kFloat);
  // scratch, zeroed by one memset: wsum, s1, s2 (the sums of pass 1; only wsum is returned, a view
  // at the start of the buffer -- a fake tensor has storage offset 0, and opcheck's fake-tensor test
  // on the H100 (session 7) failed on wsum's nonzero offset), then A, B (the solve's coefficients)
  // (a dense copy of f, if one is made, comes first: with tuning_pdl the memset below must be the kernel
  // just ahead of pass 1)
  const at::Tensor fin = dense(f);
  at::Tensor sums = at::zeros({4 * K * C + K}, fopt);
  // the returned statistics each in their own memory (the schema promises outputs that share none;
  // torch.library.opcheck's schema test on the H100 caught views of one buffer)
  at::Tensor mean = at::empty({K, C}, fopt), var = at::empty({K, C}, fopt), off = at::empty({K, C}, fopt);
  float* wsum = sums.data_ptr<float>();
  float* p = wsum + K;
  float* a = p + 2 * K * C;
  const int n = static_cast<int>(K * C);
  SolveArgs sa{sm.data_ptr<float>(), sd.data_ptr<float>(), static_cast<int>(K), static_cast<int>(C),
               static_cast<float>(alpha), static_cast<int>(mode), static_cast<int>(iterations),
               mode == 1 ? static_cast<float>(alpha / (1.0 - alpha)) : 0.f, static_cast<float>(momentum),
               pm.defined() ? pm.data_ptr<float>() : nullptr, pv.defined() ? pv.data_ptr<float>() : nullptr,
               o0.defined() ? o0.data_ptr<float>() : nullptr, mean.data_ptr<float>(), var.data_ptr<float>(),
               off.data_ptr<float>(), a, a + n};
  // with tuning_pdl, both passes are programmatic launches: every input they read before their
  // griddepcontrol.wait (f, w) was complete before the memset, an ordinary launch, started
  moments(fin, w, p, p + K * C, wsum, stream, tuning_pdl, true);
  const float lo = floor.has_value() ? static_cast<float>(*floor) : -3.0e38f;
  at::Tensor out = at::empty_like(fin);
  if (tuning_solve_in_pass2) {
    affine(fin, w, a, a + n, out, lo, stream, p, p + K * C, wsum, &sa, tuning_pdl, true);
  } else {
    stylecam::launch_solve(p, p + K * C, wsum, sa, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    affine(fin, w, a, a + n, out, lo, stream, nullptr, nullptr, nullptr, nullptr, tuning_pdl, true);
  }
  return {out, sums.narrow(0, 0, K), mean, var, off};
}

TORCH_LIBRARY_IMPL(stylecam, CUDA, m) {
  m.impl("masked_moments", &masked_moments_cuda);
  m.impl("masked_affine", &masked_affine_cuda);
  m.impl("fused_recon", &fused_recon_cuda);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("set_tuning", &set_tuning, "pass 1's layout on the vector path (realtime/kernels.py set_tuning maps the "
        "variant names onto these fields) and whether fused_recon solves in pass 2's prologue; false, changing "
        "nothing, for a combination no kernel is built for",
        pybind11::arg("lanes"), pybind11::arg("prefetch"), pybind11::arg("lpc"), pybind11::arg("tile_div"),
        pybind11::arg("even"),
        pybind11::arg("solve_in_pass2"), pybind11::arg("pdl") = false, pybind11::arg("early") = false,
        pybind11::arg("fill") = false, pybind11::arg("l2") = false, pybind11::arg("p256") = false,
        pybind11::arg("rev") = false);
}
