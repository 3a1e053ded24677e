// Kernels of stylecam's fused masked reconstruction (see masked_recon.cu for the ops and the maths).
// This header needs only CUDA's own headers, so each dtype's translation unit (masked_recon_f32.cu,
// _f16.cu, _bf16.cu) compiles fast and in parallel with the others; PyTorch's headers are parsed
// once, in masked_recon.cu.
//
// moments_kernel (pass 1 off the vector path) and affine_kernel (pass 2) give each block a tile of
// pixels and a group of channels: a thread loads the K mask values of its PPT pixels into
// registers once and reuses them for every channel of the group, so the masks are not re-read per
// channel.  Where a channel's plane is contiguous and 16-byte aligned (NCHW, H*W a multiple of the
// vector width), a thread's pixels come in runs of VEC = 16 / sizeof(T) and each run is one 16-byte
// load or store; otherwise (channels_last, odd sizes) VEC = 1 and every pixel goes through the
// strides.  moments_kernel reduces within warps (shuffles), then within the block (shared memory),
// then one atomicAdd per block and sum.  On the vector path pass 1 is moments_lanes_kernel (a
// thread per channel, no shuffles; faster on the H100 we measured), described above it.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

namespace stylecam {

constexpr int kMaxK = 8;
constexpr int kThreads = 256;
constexpr int kMaxGroup = 64;        // channels per block, at most
constexpr float kEps = 1e-5f;        // realtime/reconstruct.py EPS

__host__ __device__ constexpr int pixels_per_thread(int K) { return K <= 4 ? 16 : 8; }

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Programmatic dependent launch (Hopper, sm_90+; PTX griddepcontrol, the instructions behind CUDA's
// cudaGridDependencySynchronize / cudaTriggerProgrammaticLaunchCompletion; the idea is NVIDIA's, see
// the CUDA programming guide's "Programmatic Dependent Launch and Synchronization").  A kernel
// launched with the programmatic-serialization attribute (launch() below, the +pdl variant) may start
// before the kernel ahead of it on the stream has finished: `wait_for_primary` blocks until that
// kernel has completed and its writes are visible; `allow_dependents` lets the next such kernel start
// early.  Both do nothing on older GPUs and in kernels launched the ordinary way.
__device__ __forceinline__ void wait_for_primary() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void allow_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

// +l2 (written in session 15 without a GPU, not yet timed): L2 eviction-priority hints, sm_80+ (PTX
// createpolicy and the .L2::cache_hint qualifier of ld/st).  Pass 1 reads the features with
// evict_last, so that the 29.5 MB of a 720p FP16 frame (the H100's L2 holds 50 MB) are still in L2
// when pass 2 reads them a few microseconds later; pass 2 reads them with evict_first (their last use
// here, which also lowers the priority pass 1 gave them) and writes its output with evict_first, so
// that the output's lines are the first to leave instead of the features pass 2 has not read yet.
// Pass 2 is 22 of the op's 41 us at 720p and moves 59 MB at about the copy rate: every feature byte it
// finds in L2 is one byte fewer from DRAM.  Older GPUs compile the plain loads and stores.
// The L2 policy evict_last (LAST) or evict_first, for all of the addresses a load or store touches
template <bool LAST>
__device__ __forceinline__ uint64_t l2_policy() {
  uint64_t p = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (LAST) asm("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(p));
  else asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
#endif
  return p;
}
// A read-only 16-byte load (as __ldg) with the L2 policy `pol`
__device__ __forceinline__ uint4 ldg_hint(const void* ptr, uint64_t pol) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint4 r;
  asm("ld.global.nc.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(ptr), "l"(pol));
  return r;
#else
  return __ldg(reinterpret_cast<const uint4*>(ptr));
#endif
}
// A 16-byte store with the L2 policy `pol`
__device__ __forceinline__ void stg_hint(void* ptr, const uint4& v, uint64_t pol) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("st.global.L2::cache_hint.v4.u32 [%0], {%1, %2, %3, %4}, %5;"
               :: "l"(ptr), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w), "l"(pol));   // out is not read here
#else
  *reinterpret_cast<uint4*>(ptr) = v;
#endif
}
// +p256 (written in session 15 without a GPU, not yet timed): a read-only 16-byte load that asks L2
// to fetch the whole 256-byte block around it from DRAM (PTX .L2::256B prefetch size, sm_80+).  In
// pass 1's quad layout a block reads 128 contiguous bytes of a channel per step and the next 128 on
// its next step, so the prefetch turns every other step's DRAM misses into L2 hits: more bytes in
// flight per load instruction, for a pass that Nsight Compute found waiting on global loads 8.4 of
// every 14.3 cycles at 48 % occupancy.
__device__ __forceinline__ uint4 ldg_256(const void* ptr) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint4 r;
  asm("ld.global.nc.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(ptr));
  return r;
#else
  return __ldg(reinterpret_cast<const uint4*>(ptr));
#endif
}
// A 16-byte read-only load: HINT 0 as __ldg, 1 with the L2 policy `pol` (+l2), 2 with L2's 256-byte
// prefetch (+p256)
template <int HINT>
__device__ __forceinline__ uint4 load16(const void* ptr, uint64_t pol) {
  if constexpr (HINT == 1) return ldg_hint(ptr, pol);
  else if constexpr (HINT == 2) return ldg_256(ptr);
  else return __ldg(reinterpret_cast<const uint4*>(ptr));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  return v;
}

// Pixel i (0 <= i < PPT) of this thread in the tile starting at tile0: runs of VEC consecutive pixels.
template <int VEC>
__device__ __forceinline__ int64_t pixel_of(int64_t tile0, int i) {
  return tile0 + (static_cast<int64_t>(i / VEC) * kThreads + threadIdx.x) * VEC + (i % VEC);
}

// A thread's PPT pixels: offsets from the channel's base (through the strides), validity, and
// the K mask weights of each (zero past the end).  On the vector path the plane is contiguous, so
// the offset is the pixel index; otherwise a 32-bit division (H*W < 2^31 is checked by the host).
template <int K, int PPT, int VEC>
__device__ __forceinline__ void load_tile(const float* __restrict__ w, int64_t P, int W, int64_t sh, int64_t sw,
                                          int64_t tile0, int64_t (&off)[PPT], bool (&ok)[PPT], float (&m)[K][PPT]) {
#pragma unroll
  for (int i = 0; i < PPT; ++i) {
    const int64_t p = pixel_of<VEC>(tile0, i);
    ok[i] = p < P;
    const int64_t q = ok[i] ? p : 0;
    if constexpr (VEC > 1) {
      off[i] = q;
    } else {
      const int qi = static_cast<int>(q);
      off[i] = static_cast<int64_t>(qi / W) * sh + static_cast<int64_t>(qi % W) * sw;
    }
#pragma unroll
    for (int k = 0; k < K; ++k) m[k][i] = ok[i] ? w[k * P + q] : 0.f;
  }
}

// The PPT feature values of one channel (base fc) as floats (16-byte loads with the L2 policy pol
// where HINT).
template <typename T, int PPT, int VEC, bool HINT = false>
__device__ __forceinline__ void load_values(const T* __restrict__ fc, const int64_t (&off)[PPT], float (&v)[PPT],
                                            uint64_t pol = 0) {
  if constexpr (VEC == 1) {
#pragma unroll
    for (int i = 0; i < PPT; ++i) v[i] = to_f(fc[off[i]]);     // past the end: offset 0, weight 0
  } else {
#pragma unroll
    for (int u = 0; u < PPT / VEC; ++u) {
      const uint4 raw = load16<HINT ? 1 : 0>(fc + off[u * VEC], pol);
      const T* t = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int e = 0; e < VEC; ++e) v[u * VEC + e] = to_f(t[e]);
    }
  }
}

// The between-pass solve of one (region k, channel c) entry i = k * C + c: statistics from the
// sums, temporal smoothing with the previous frame's (warm start), the coefficients A, B of pass 2.
// mode 0: linear, exact; 1: linear, `iterations` steps of the paper's iteration; 2: adain.  Run by
// solve_kernel (masked_recon_f32.cu, one thread per entry).  (Running it in pass 1's last block
// instead -- a memory fence and a ticket counter, one launch fewer -- was measured on the lent H100
// on 2026-11-26 and was slower at every size, 47 vs 45 us at 720p: one block solving K x C entries
// after the grid's tail costs more than the launch it saves.  Removed.)
struct SolveArgs {
  const float* smean; const float* sstd;
  int K, C;
  float alpha; int mode, iterations; float beta, momentum;
  const float* prev_mean; const float* prev_var; const float* off0;
  float* mean_out; float* var_out; float* off_out; float* A; float* B;
};

struct Coef { float A, B; };

// `write`: store the entry's statistics and coefficients in SolveArgs' outputs (solve_kernel: always;
// the solve in pass 2's prologue: one block per channel group)
__device__ __forceinline__ Coef solve_entry(int i, const float* s1, const float* s2, const float* ws,
                                            const SolveArgs& a, bool write) {
  const int k = i / a.C;
  // __ldcg: the sums were written by other blocks' atomics (in L2); never read them through L1
  const float nz = fmaxf(__ldcg(ws + k), kEps);
  float mean = __ldcg(s1 + i) / nz;
  float var = fmaxf(__ldcg(s2 + i) / nz - mean * mean, 0.f);
  if (a.prev_mean != nullptr) {                 // warm start: m * previous + (1 - m) * current
    mean = a.momentum * a.prev_mean[i] + (1.f - a.momentum) * mean;
    var = a.momentum * a.prev_var[i] + (1.f - a.momentum) * var;
  }
  const float mus = a.smean[i];
  Coef e;
  float off = 0.f;
  if (a.mode == 2) {
    const float r = a.sstd[i] / sqrtf(var + kEps);
    e.A = (1.f - a.alpha) + a.alpha * r;
    e.B = a.alpha * (mus - r * mean);
  } else if (a.mode == 0) {
    e.A = 1.f;
    e.B = a.alpha * (mus - mean);
  } else {                                      // the region mean's scalar recurrence, N steps (paper §3.1)
    float mu = mean + (a.off0 != nullptr ? a.off0[i] : 0.f), prev = mu;
    for (int t = 0; t < a.iterations; ++t) { prev = mu; mu = mean - a.beta * (mu - mus); }
    e.A = 1.f;
    e.B = a.iterations > 0 ? -a.beta * (prev - mus) : mu - mean;
    off = mu - mean;
  }
  if (write) {
    a.mean_out[i] = mean;
    a.var_out[i] = var;
    a.off_out[i] = off;
    a.A[i] = e.A;
    a.B[i] = e.B;
  }
  return e;
}

// grid: (pixel tiles, channel groups). s1, s2 (K x C) and wsum (K) must be zero on entry.
template <typename T, int K, int VEC>
__global__ void __launch_bounds__(kThreads) moments_kernel(
    const T* __restrict__ f, int64_t sc, int64_t sh, int64_t sw, const float* __restrict__ w, int C, int H, int W,
    int group, float* __restrict__ s1, float* __restrict__ s2, float* __restrict__ wsum) {
  constexpr int PPT = pixels_per_thread(K);
  static_assert(PPT % VEC == 0, "a thread's pixels are whole runs");
  __shared__ float acc[2 * K + 1][kMaxGroup];
  const int64_t P = static_cast<int64_t>(H) * W;
  const int64_t tile0 = static_cast<int64_t>(blockIdx.x) * kThreads * PPT;
  const int c0 = blockIdx.y * group, nc = min(group, C - c0);
  for (int i = threadIdx.x; i < (2 * K + 1) * kMaxGroup; i += kThreads) (&acc[0][0])[i] = 0.f;
  int64_t off[PPT];
  bool ok[PPT];
  float m[K][PPT];
  load_tile<K, PPT, VEC>(w, P, W, sh, sw, tile0, off, ok, m);
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
  // the next channel's values are loaded before this one's reduction: more bytes in flight per thread
  float nxt[PPT];
  load_values<T, PPT, VEC>(f + static_cast<int64_t>(c0) * sc, off, nxt);
  for (int j = 0; j < nc; ++j) {
    float v[PPT];
#pragma unroll
    for (int i = 0; i < PPT; ++i) v[i] = nxt[i];
    if (j + 1 < nc) load_values<T, PPT, VEC>(f + static_cast<int64_t>(c0 + j + 1) * sc, off, nxt);
    float a1[K], a2[K];
#pragma unroll
    for (int k = 0; k < K; ++k) { a1[k] = 0.f; a2[k] = 0.f; }
#pragma unroll
    for (int i = 0; i < PPT; ++i) {
      const float x = ok[(i / VEC) * VEC] ? v[i] : 0.f, xx = x * x;   // a run is wholly in or out
#pragma unroll
      for (int k = 0; k < K; ++k) { a1[k] = fmaf(m[k][i], x, a1[k]); a2[k] = fmaf(m[k][i], xx, a2[k]); }
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

// Pass 1 on the vector path ("lanes", the default; STYLECAM_MOMENTS=warp picks moments_kernel
// above): a thread per channel instead of a warp per channel, so that no warp shuffles are needed.
// Block = 32 channels (threadIdx.x) x 8 pixel lanes (threadIdx.y) over a tile of TILE pixels whose
// masks sit in shared memory (every lane of a warp reads the same mask value: a broadcast).  Each
// thread walks its channel's tile in 16-byte runs; the 8 lanes' partial sums meet in shared memory,
// and one atomicAdd per block and sum goes to global memory.  Written after the lent H200 showed
// the warp layout's pass 1 at ~1 TB/s (shuffle-bound); on the lent H100 it took pass 1 from 30.6 to
// 18.8 us at 720p (benchmarks/kernel.py --profile).  TILE is a launch choice
// (Pass1 below: the largest tile, or half of it with prefetch): smaller tiles give more blocks,
// larger ones load fewer masks per byte of features (a quarter of the tile, timed in sessions 6-9,
// never won and was removed).
constexpr int kLanes = 32;
constexpr int kRows = 8;
// the largest tile: K x TILE masks plus the reduction buffer stay under 48 KB of shared memory
__host__ __device__ constexpr int lanes_max_tile(int K) { return K <= 4 ? 1024 : 512; }

// Where a thread of the lanes layouts works (moments_lanes_kernel, and affine_lanes_kernel, which must
// read what pass 1 read): its block's span of pixels p0 .. p0 + n (n a multiple of VEC, at most the
// tile), its channel c (cb within the block's 32), its run q within its channel's group of LPC lanes,
// its pixel row r, and its first run j0; its later runs follow every kRows * VEC pixels.
template <int LPC, int VEC>
struct LanesPlace {
  int64_t p0;
  int n, tid, q, cb, r, c, j0;
  __device__ __forceinline__ LanesPlace(int64_t P, int span)
      : p0(static_cast<int64_t>(blockIdx.x) * span),
        n(static_cast<int>(P - p0 < span ? P - p0 : span)),
        tid(threadIdx.y * kLanes + threadIdx.x),
        q(threadIdx.x % LPC),
        cb((threadIdx.y % LPC) * (kLanes / LPC) + threadIdx.x / LPC),
        r(threadIdx.y / LPC),
        c(blockIdx.y * kLanes + cb),
        j0((r * LPC + q) * VEC) {}
};

// The masks of a lanes block's span (pixels p0 .. p0 + n) into shared memory, zero past n: 16-byte
// loads where the masks are 16-byte aligned (P and the span's start are multiples of VEC >= 4 on the
// lanes path, so every region's run stays aligned, and n is too, so a group of 4 is wholly in or past
// the end): a quarter of the load instructions of the scalar loop, which each block runs before its
// first use of the features (session 7; on the H100 in session 8 pass 1 took 18.7 us at 720p against
// 19.0 with the scalar loop).  The caller synchronises the block.
template <int K, int TILE>
__device__ __forceinline__ void stage_masks(const float* __restrict__ w, int64_t P, int64_t p0, int n, int tid,
                                            float (&ms)[K][TILE]) {
  if ((reinterpret_cast<uintptr_t>(w) & 15) == 0) {
    constexpr int Q = TILE / 4;
    for (int i = tid; i < K * Q; i += kLanes * kRows) {
      const int k = i / Q, j = (i % Q) * 4;
      *reinterpret_cast<float4*>(&ms[k][j]) =
          j < n ? __ldg(reinterpret_cast<const float4*>(w + k * P + p0 + j)) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
  } else {
    for (int i = tid; i < K * TILE; i += kLanes * kRows) {
      const int k = i / TILE, j = i % TILE;
      ms[k][j] = j < n ? w[k * P + p0 + j] : 0.f;
    }
  }
}

// One 16-byte run of a channel's features (at pixel j of the tile) into the K pairs of sums, with
// the run's masks from shared memory (every lane of a warp reads the same address: a broadcast).
template <typename T, int K, int TILE>
__device__ __forceinline__ void accumulate_run(const uint4& raw, const float (&ms)[K][TILE], int j, float (&a1)[K],
                                               float (&a2)[K]) {
  constexpr int VEC = 16 / sizeof(T);
  const T* t = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int e = 0; e < VEC; e += 4) {
    float x[4], xx[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) { x[q] = to_f(t[e + q]); xx[q] = x[q] * x[q]; }
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const float4 m4 = *reinterpret_cast<const float4*>(&ms[k][j + e]);
      a1[k] = fmaf(m4.x, x[0], fmaf(m4.y, x[1], fmaf(m4.z, x[2], fmaf(m4.w, x[3], a1[k]))));
      a2[k] = fmaf(m4.x, xx[0], fmaf(m4.y, xx[1], fmaf(m4.z, xx[2], fmaf(m4.w, xx[3], a2[k]))));
    }
  }
}

// PREFETCH = true (with half the largest tile: the op's choice once the largest tile gives more than
// a wave, e.g. 1080p; STYLECAM_MOMENTS=prefetch2 forces it).  Nsight Compute on the lent H100
// (2026-11-26, 720p FP16 K=3, largest tile) put pass 1 at 0.58 waves of 456 blocks, 41 % achieved
// occupancy, and 10.2 of every 14.9 cycles between a warp's instructions waiting on a global load
// (L1TEX scoreboard): too few bytes in flight, and none at all while a block stages its masks and
// waits at the barrier.  Here each thread issues its first U feature loads BEFORE the mask stage
// (they do not need the masks), then keeps U loads in flight through a fully unrolled walk of its
// channel's tile (a ring of U registers, each refilled right after it is consumed).  Past the
// tile's end a run is zero, which adds nothing.  (A variant without the mask stage -- each thread
// reading its masks from global memory next to its feature load -- was measured the same day and
// was slower everywhere, 50 vs 45 us at 720p; removed.)  Measured on the H100 in session 7
// (benchmarks/kernel.py): with half the tile, 1080p 75.7 % of copy bandwidth (73.4 % without); with the
// largest tile, 69.1 % at 720p against 69.5 % without (a tie at 53 vs 40 registers: removed).  Under
// Nsight Compute at 720p pass 1 still waits on global loads 8.4 of every 14.3 cycles.
//
// LPC (lanes per channel; 1 = the layout above).  With LPC = 1 a warp's load touches
// 32 channels' rows, 16 bytes of each: 32 sectors of 32 bytes for 512 bytes used, the other half of
// each sector read by the next warp (the ncu profile: L1/L2 traffic 62.7 % of peak against DRAM's
// 46 %).  With LPC = 4 (STYLECAM_MOMENTS=quad; the default since session 9) the LPC consecutive lanes of a group read
// LPC consecutive runs of one channel, so a warp's load covers 32 / LPC channels in whole sectors
// (64 or 128 contiguous bytes each): half the sectors for the same bytes.  The block still covers
// 32 channels: LPC warps side by side, kRows / LPC of them along the pixels; a thread's runs keep
// the same stride (STEP), only their start moves.  The LPC partial sums of a channel meet by warp
// shuffles (log2 LPC steps per sum, once per block) before the shared-memory reduction.  Written in
// session 8 without a GPU, timed on the lent H100 in session 9 (benchmarks/kernel.py, CUDA graphs,
// adain/linear, same run): 720p 79/78 % of copy bandwidth against 75/76 % with LPC = 1; pass 1
// 18.1 us against 20.6 under ncu.  LPC = 8 (octet) was slower at every size (64/74/75 % at
// 480p/720p/1080p) and was removed; the template keeps any power of two up to 8.
//
// span: the pixels of a block, at most TILE and a multiple of VEC (TILE itself but for the +even
// launches, even_span below).  HINT (without PREFETCH): the feature loads with L2 evict_last (1, +l2;
// l2_policy above) or L2's 256-byte prefetch (2, +p256; ldg_256).
template <typename T, int K, int TILE, bool PREFETCH, int LPC = 1, int HINT = 0>
__global__ void __launch_bounds__(kLanes * kRows) moments_lanes_kernel(
    const T* __restrict__ f, int64_t sc, const float* __restrict__ w, int C, int64_t P, int span,
    float* __restrict__ s1, float* __restrict__ s2, float* __restrict__ wsum, bool early) {
  constexpr int VEC = 16 / sizeof(T);
  constexpr int STEP = kRows * VEC;                       // pixels between a thread's runs
  constexpr int ITERS = TILE / STEP;                      // runs per thread
  constexpr int U = ITERS < 4 ? ITERS : 4;                // loads in flight per thread (PREFETCH)
  constexpr int R = kRows / LPC;                          // warps along the pixels per channel
  static_assert(VEC % 4 == 0 && TILE % STEP == 0, "runs of whole float4 mask groups");
  static_assert(LPC >= 1 && kRows % LPC == 0 && (LPC & (LPC - 1)) == 0, "LPC: 1, 2, 4 or 8");
  static_assert(!(HINT && PREFETCH), "+l2 and +p256 are built for the layouts without prefetch");
  __shared__ __align__(16) float ms[K][TILE];
  __shared__ float red[kRows][2 * K][kLanes + 1];
  const LanesPlace<LPC, VEC> at(P, span);
  const int64_t p0 = at.p0;
  const int n = at.n, tid = at.tid, q = at.q, cb = at.cb, r = at.r, c = at.c, j0 = at.j0;
  const T* fc = f + static_cast<int64_t>(c < C ? c : 0) * sc + p0;
  uint4 ring[U];
  if constexpr (PREFETCH) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int j = j0 + u * STEP;
      ring[u] = (c < C && j < n) ? __ldg(reinterpret_cast<const uint4*>(fc + j)) : make_uint4(0u, 0u, 0u, 0u);
    }
  }
  stage_masks<K, TILE>(w, P, p0, n, tid, ms);
  __syncthreads();
  if (early) allow_dependents();      // +early: pass 2 may launch (into spare slots) before this block's loop
  __shared__ float area[K];
  if (blockIdx.y == 0 && threadIdx.y == 0) {    // region areas, once per tile, by one warp (added at the end)
#pragma unroll
    for (int k = 0; k < K; ++k) {
      float t = 0.f;
      for (int j = threadIdx.x; j < n; j += kLanes) t += ms[k][j];
      t = warp_sum(t);
      if (threadIdx.x == 0) area[k] = t;
    }
  }
  float a1[K], a2[K];
#pragma unroll
  for (int k = 0; k < K; ++k) { a1[k] = 0.f; a2[k] = 0.f; }
  if constexpr (PREFETCH) {
#pragma unroll
    for (int it = 0; it < ITERS; ++it) {
      const int j = j0 + it * STEP;
      const uint4 raw = ring[it % U];
      if (it + U < ITERS) {
        const int jn = j + U * STEP;
        ring[it % U] = (c < C && jn < n) ? __ldg(reinterpret_cast<const uint4*>(fc + jn)) : make_uint4(0u, 0u, 0u, 0u);
      }
      accumulate_run<T, K, TILE>(raw, ms, j, a1, a2);
    }
  } else if (c < C) {
    const uint64_t pol = HINT == 1 ? l2_policy<true>() : 0;
#pragma unroll 2
    for (int j = j0; j < n; j += STEP)
      accumulate_run<T, K, TILE>(load16<HINT>(fc + j, pol), ms, j, a1, a2);
  }
  if (!early) allow_dependents();     // pass 2 (+pdl) may now launch and load its masks
  if constexpr (LPC > 1) {            // every lane is here (the loop above has ended for all)
#pragma unroll
    for (int k = 0; k < K; ++k) {
#pragma unroll
      for (int o = LPC / 2; o > 0; o >>= 1) {
        a1[k] += __shfl_xor_sync(0xffffffffu, a1[k], o);
        a2[k] += __shfl_xor_sync(0xffffffffu, a2[k], o);
      }
    }
  }
  if (q == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      red[r][k][cb] = a1[k];
      red[r][K + k][cb] = a2[k];
    }
  }
  __syncthreads();
  wait_for_primary();                 // +pdl: the memset zeroing the sums has finished
  if (blockIdx.y == 0 && tid < K) atomicAdd(&wsum[tid], area[tid]);
  for (int i = tid; i < 2 * K * kLanes; i += kLanes * kRows) {
    const int row = i / kLanes, lane = i % kLanes, cc = blockIdx.y * kLanes + lane;
    if (cc < C) {
      float t = 0.f;
#pragma unroll
      for (int rr = 0; rr < R; ++rr) t += red[rr][row][lane];
      atomicAdd(&(row < K ? s1 : s2)[(row % K) * C + cc], t);
    }
  }
}

// grid: (pixel tiles, channel groups). out[c,p] = f * sum_k W[k,p] A[k,c] + sum_k W[k,p] B[k,c],
// clamped to [lo, hi] (FP16's finite range for FP16); out has f's strides.
// With s1 != nullptr (the solve in pass 2: fused_recon's default; STYLECAM_MOMENTS=...+solve1 opts out)
// A and B are not read: each block first solves the K x group entries of its own channels from the
// sums of pass 1 (solve_entry; the blocks of the first pixel tile also store the statistics and
// coefficients the op returns), which saves the solve kernel's launch (2.2 us of 45 at 720p on the
// H100) for a little redundant arithmetic per block.
// HINT (+l2, VEC > 1): the feature loads and the output's stores with L2 evict_first (l2_policy).
template <typename T, int K, int VEC, bool HINT = false>
__global__ void __launch_bounds__(kThreads) affine_kernel(
    const T* __restrict__ f, int64_t sc, int64_t sh, int64_t sw, const float* __restrict__ w,
    const float* __restrict__ A, const float* __restrict__ B, int C, int H, int W, int group,
    T* __restrict__ out, float lo, float hi, const float* __restrict__ s1, const float* __restrict__ s2,
    const float* __restrict__ ws, SolveArgs sa, bool early) {
  constexpr int PPT = pixels_per_thread(K);
  static_assert(PPT % VEC == 0, "a thread's pixels are whole runs");
  __shared__ float coef[2][K][kMaxGroup];
  const int64_t P = static_cast<int64_t>(H) * W;
  const int64_t tile0 = static_cast<int64_t>(blockIdx.x) * kThreads * PPT;
  const int c0 = blockIdx.y * group, nc = min(group, C - c0);
  int64_t off[PPT];
  bool ok[PPT];
  float m[K][PPT];
  load_tile<K, PPT, VEC>(w, P, W, sh, sw, tile0, off, ok, m);
  // +early: the first channel's features too (f was complete before pass 1 began, like the masks)
  static_assert(!HINT || VEC > 1, "+l2 is built for the vector path");
  const uint64_t pol = HINT ? l2_policy<false>() : 0;
  float first[PPT];
  if (early) load_values<T, PPT, VEC, HINT>(f + static_cast<int64_t>(c0) * sc, off, first, pol);
  wait_for_primary();   // +pdl: the masks were loaded while pass 1 (or the solve) ran; its sums are now complete
  const bool solve_here = s1 != nullptr;        // the same for every thread of the grid
  if (solve_here) {
    for (int i = threadIdx.x; i < K * nc; i += kThreads) {
      const int k = i / nc, j = i % nc;
      const Coef e = solve_entry(k * C + c0 + j, s1, s2, ws, sa, blockIdx.x == 0);
      coef[0][k][j] = e.A;
      coef[1][k][j] = e.B;
    }
    __syncthreads();
  }
  for (int j = 0; j < nc; ++j) {
    const int c = c0 + j;
    float a[K], b[K];
#pragma unroll
    for (int k = 0; k < K; ++k) {
      a[k] = solve_here ? coef[0][k][j] : __ldg(&A[k * C + c]);
      b[k] = solve_here ? coef[1][k][j] : __ldg(&B[k * C + c]);
    }
    float v[PPT];
    if (early && j == 0) {
#pragma unroll
      for (int i = 0; i < PPT; ++i) v[i] = first[i];
    } else {
      load_values<T, PPT, VEC, HINT>(f + static_cast<int64_t>(c) * sc, off, v, pol);
    }
    float r[PPT];
#pragma unroll
    for (int i = 0; i < PPT; ++i) {
      float ga = 0.f, gb = 0.f;
#pragma unroll
      for (int k = 0; k < K; ++k) { ga = fmaf(m[k][i], a[k], ga); gb = fmaf(m[k][i], b[k], gb); }
      r[i] = fminf(fmaxf(fmaf(v[i], ga, gb), lo), hi);
    }
    T* oc = out + static_cast<int64_t>(c) * sc;
    if constexpr (VEC == 1) {
#pragma unroll
      for (int i = 0; i < PPT; ++i)
        if (ok[i]) oc[off[i]] = from_f<T>(r[i]);
    } else {
#pragma unroll
      for (int u = 0; u < PPT / VEC; ++u) {
        if (!ok[u * VEC]) continue;             // a run is wholly in or wholly past the end
        uint4 raw;
        T* t = reinterpret_cast<T*>(&raw);
#pragma unroll
        for (int e = 0; e < VEC; ++e) t[e] = from_f<T>(r[u * VEC + e]);
        if constexpr (HINT) stg_hint(oc + off[u * VEC], raw, pol);
        else *reinterpret_cast<uint4*>(oc + off[u * VEC]) = raw;
      }
    }
  }
}

// Pass 2 in pass 1's quad layout, walking each span BACKWARDS (+rev, with quad; written in session 23
// without a GPU, not yet timed).  The idea, from session 22's H200 run (docs/gpu_measurements.md): a
// 720p FP16 frame's features (29.5 MB) fit in the L2 (50 MB), but pass 1 and affine_kernel walk them in
// unrelated orders -- pass 1's blocks, all resident in one wave, advance through their spans together
// with every channel, so what pass 1 read LAST is the end of every span in every channel; affine_kernel's
// blocks hold a pixel tile and sweep their group's channels, reading every pixel of one channel first.
// Under any least-recently-used replacement the lines pass 2 asks for first are then the oldest, and a
// stream longer than the L2's share holding it finds almost none (+l2's evict_last gained at most 1.4
// points).  This kernel has pass 1's grid (the same spans, from lanes_span, and 32-channel groups) and
// thread layout (LPC = 4 lanes per channel on consecutive 16-byte runs), and each thread walks its runs
// from the span's end to its start: its first reads are pass 1's last, the most recently cached lines.
// Each block solves (or reads, with +solve1) the coefficients of its 32 channels into shared memory,
// and stages its span's masks as pass 1 does (before wait_for_primary: the masks were complete before
// pass 1 began); +early also loads each thread's first run before the wait.  Per pixel the arithmetic is
// affine_kernel's, in the same order (the same results).  Only on the vector path (contiguous NCHW,
// 16-byte aligned, H*W a multiple of VEC).  ptxas (sm_90, FP16, K = 3): 48 registers, no spills, five
// blocks per multiprocessor -- enough for 720p's spans in one wave (four per multiprocessor on 132);
// capped at six, pass 1's, it spilled (24-140 bytes), so not capped.
template <typename T, int K, int TILE, int LPC = 4>
__global__ void __launch_bounds__(kLanes * kRows) affine_lanes_kernel(
    const T* __restrict__ f, int64_t sc, const float* __restrict__ w, const float* __restrict__ A,
    const float* __restrict__ B, int C, int64_t P, int span, T* __restrict__ out, float lo, float hi,
    const float* __restrict__ s1, const float* __restrict__ s2, const float* __restrict__ ws, SolveArgs sa,
    bool early) {
  constexpr int VEC = 16 / sizeof(T);
  constexpr int STEP = kRows * VEC;                       // pixels between a thread's runs
  static_assert(VEC % 4 == 0 && TILE % STEP == 0, "runs of whole float4 mask groups");
  static_assert(LPC >= 1 && kRows % LPC == 0 && (LPC & (LPC - 1)) == 0, "LPC: 1, 2, 4 or 8");
  static_assert(K * kLanes <= kLanes * kRows, "one solve per thread at most");
  __shared__ __align__(16) float ms[K][TILE];
  __shared__ float coef[2][K][kLanes];
  const LanesPlace<LPC, VEC> at(P, span);                              // pass 1's place for this thread
  const int64_t p0 = at.p0;
  const int n = at.n, tid = at.tid, cb = at.cb, c = at.c, j0 = at.j0;   // j0: this thread's first run ...
  const int64_t base = static_cast<int64_t>(c < C ? c : 0) * sc + p0;
  const int jl = j0 < n ? j0 + (n - 1 - j0) / STEP * STEP : j0 - STEP; // ... and its last (none: below j0)
  uint4 first = make_uint4(0u, 0u, 0u, 0u);
  if (early && c < C && jl >= j0) first = __ldg(reinterpret_cast<const uint4*>(f + base + jl));
  stage_masks<K, TILE>(w, P, p0, n, tid, ms);
  wait_for_primary();   // +pdl: pass 1's sums (or the solve kernel's A and B) are complete from here
  if (tid < K * kLanes) {
    const int k = tid / kLanes, cc = blockIdx.y * kLanes + tid % kLanes;
    float a = 0.f, b = 0.f;
    if (cc < C) {
      if (s1 != nullptr) {
        const Coef e = solve_entry(k * C + cc, s1, s2, ws, sa, blockIdx.x == 0);
        a = e.A;
        b = e.B;
      } else {
        a = __ldg(&A[k * C + cc]);
        b = __ldg(&B[k * C + cc]);
      }
    }
    coef[0][k][tid % kLanes] = a;
    coef[1][k][tid % kLanes] = b;
  }
  __syncthreads();                    // the last barrier: threads past the last channel may leave now
  if (c >= C) return;
  float a[K], b[K];
#pragma unroll
  for (int k = 0; k < K; ++k) { a[k] = coef[0][k][cb]; b[k] = coef[1][k][cb]; }
  const T* fc = f + base;
  T* oc = out + base;
#pragma unroll 2
  for (int j = jl; j >= j0; j -= STEP) {
    const uint4 raw = (early && j == jl) ? first : __ldg(reinterpret_cast<const uint4*>(fc + j));
    const T* t = reinterpret_cast<const T*>(&raw);
    uint4 res;
    T* o = reinterpret_cast<T*>(&res);
#pragma unroll
    for (int e = 0; e < VEC; e += 4) {
      float ga[4] = {0.f, 0.f, 0.f, 0.f}, gb[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const float4 m4 = *reinterpret_cast<const float4*>(&ms[k][j + e]);
        const float mm[4] = {m4.x, m4.y, m4.z, m4.w};
#pragma unroll
        for (int u = 0; u < 4; ++u) { ga[u] = fmaf(mm[u], a[k], ga[u]); gb[u] = fmaf(mm[u], b[k], gb[u]); }
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) o[e + u] = from_f<T>(fminf(fmaxf(fmaf(to_f(t[e + u]), ga[u], gb[u]), lo), hi));
    }
    *reinterpret_cast<uint4*>(oc + j) = res;
  }
}

// Launch shape of both passes: tiles of kThreads * PPT pixels times groups of channels, as few
// groups as fill the GPU in one wave (`slots` = resident blocks per multiprocessor times
// multiprocessors): each block loads its masks once, so larger groups amortise that better, and a
// single wave has no tail.
struct Shape { int tiles, groups, group; };
inline Shape launch_shape(int64_t P, int C, int K, int slots) {
  const int64_t tile = static_cast<int64_t>(kThreads) * pixels_per_thread(K);
  const int tiles = static_cast<int>((P + tile - 1) / tile);
  int want = slots / tiles;
  want = want < 1 ? 1 : (want > C ? C : want);
  int group = (C + want - 1) / want;
  group = group > kMaxGroup ? kMaxGroup : group;
  return {tiles, (C + group - 1) / group, group};
}

// Launches `kernel` on stream s; with pdl, as a programmatic dependent launch (wait_for_primary
// above): it may start while the kernel ahead of it finishes.  Only for kernels that call
// wait_for_primary before they read anything the kernel ahead writes, and only where every input
// read before that wait was complete before the kernel ahead started.  Falls back to an ordinary
// launch if the runtime refuses the attribute.
template <typename... Params, typename... Args>
inline void launch(bool pdl, void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t s, Args... args) {
  if (pdl) {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = 0;
    cfg.stream = s;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    if (cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...) == cudaSuccess) return;
    cudaGetLastError();   // clear it and launch the ordinary way
  }
  kernel<<<grid, block, 0, s>>>(static_cast<Params>(args)...);
}

template <typename Kernel>
inline int blocks_per_sm(Kernel kernel) {
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0) != cudaSuccess || per_sm < 1) {
    cudaGetLastError();   // clear it: one block per multiprocessor is a safe guess
    per_sm = 1;
  }
  return per_sm;
}

// The +even launch policy (STYLECAM_MOMENTS=LAYOUT+even; written in session 8, timed in session 9 on
// the H100: with LPC = 1, 480p 78 % of copy bandwidth against 75 %, 720p and 1080p within a point;
// with quad, 480p 76 % against 72/73 %, 720p 78 %, 1080p 80 % against 77 %: part of the default).  With a tile per
// block, 720p on the H100 gives 57 x 8 = 456 blocks for 132 multiprocessors: 3.45 each, so some run
// four blocks and some three, and 480p gives 1.58 (one or two).  Here a block's span shrinks from the
// tile so that blocks = k x multiprocessors, k the fewest that fit the spans into the tile (rounded
// up to whole waves of `per_sm` blocks past one wave): 720p 66 x 8 = 528 blocks of 880 pixels, four
// per multiprocessor.  Returns the span (a multiple of vec, at most tile).
// fill (+fill, written in session 12 without a GPU, not yet timed): at least per_sm blocks per
// multiprocessor, i.e. every slot the registers allow (720p on the H100: 792 blocks of 584 pixels,
// six per multiprocessor, instead of four), for more warps -- and loads -- in flight: Nsight Compute
// put pass 1 at 48 % achieved occupancy, waiting on global loads 8.4 of every 14.3 cycles.
inline int even_span(int64_t P, int64_t groups, int tile, int sms, int per_sm, int vec, bool fill = false) {
  int64_t k = (P * groups + static_cast<int64_t>(tile) * sms - 1) / (static_cast<int64_t>(tile) * sms);
  if (fill && k < per_sm) k = per_sm;
  if (k > per_sm) k = (k + per_sm - 1) / per_sm * per_sm;
  for (;; ++k) {
    const int64_t nbx = (k * sms + groups - 1) / groups;               // blocks along the pixels
    int64_t span = (P + nbx - 1) / nbx;
    span = (span + vec - 1) / vec * vec;
    if (span <= tile) return static_cast<int>(span < vec ? vec : span);
  }
}

// Pass 1's layout on the vector path: what kernels.py's variant names (STYLECAM_MOMENTS, set_tuning)
// map onto, field by field.
struct Pass1 {
  bool lanes;           // moments_lanes_kernel (a thread, or lpc lanes, per channel); false: moments_kernel (a warp per channel)
  bool prefetch;        // lanes: each thread's first feature loads issued before the mask stage, 4 kept in flight
  int lpc;              // lanes: lanes per channel, 1 or 4 (4: whole 32-byte sectors per warp load)
  int tile_div;         // lanes: tile = lanes_max_tile(K) / tile_div, 1 or 2 (built: lpc 1 with prefetch
                        // and 2, lpc 1 or 4 without prefetch and 1, lpc 4 with prefetch and 1; set_tuning)
  bool even;            // lanes: block spans sized to fill whole waves evenly (even_span) instead of a tile each
  bool fill;            // even: at least as many blocks as fit on the GPU at once (even_span's fill)
  bool l2;              // lanes, lpc 4, no prefetch (+l2): L2 eviction hints in both passes (pass 2 on the
                        // vector path); see l2_policy
  bool p256;            // lanes, lpc 4, no prefetch, not with l2 (+p256): pass 1's loads with L2's 256-byte
                        // prefetch; see ldg_256
  bool rev;             // lanes, lpc 4, no prefetch, not with l2 (+rev): pass 2 as affine_lanes_kernel, pass
                        // 1's spans walked backwards (the vector path; elsewhere affine_kernel)
};

// The pixels of each block of the lanes layouts (pass 1, and pass 2 with +rev, which must walk the
// same spans): the tile, or with +even a span filling whole waves evenly (6 blocks per
// multiprocessor: the lanes kernels' register limit, 40 registers under ncu).
inline int lanes_span(const Pass1& p1, int64_t P, int64_t channel_groups, int tile, int sms, int vec) {
  return p1.even ? even_span(P, channel_groups, tile, sms, 6, vec, p1.fill) : tile;
}

// What the torch glue passes to the launchers of one dtype (T = float, __half or __nv_bfloat16).
struct Geometry {
  int K, C, H, W;
  int64_t sc, sh, sw;   // feature strides (batch 1)
  bool vec;             // contiguous NCHW planes, 16-byte aligned, H*W a multiple of 16 / sizeof(T)
  Pass1 p1;             // pass 1's layout on the vector path
  int sms;              // multiprocessors of the device
  bool pdl;             // programmatic dependent launches (fused_recon's +pdl on sm_90+): pass 1 on the
                        // lanes path after the memset, pass 2 after pass 1 or the solve
  bool early;           // with pdl (+early): pass 1 lets pass 2 launch before its loop instead of after,
                        // and pass 2 loads its first channel's features before it waits
};

// One overload per dtype, each defined in its own translation unit by STYLECAM_INSTANTIATE.
#define STYLECAM_DECLARE(T)                                                                                       \
  void launch_moments(const T* f, const float* w, const Geometry& g, float* s1, float* s2, float* ws,            \
                      cudaStream_t s);                                                       \
  void launch_affine(const T* f, const float* w, const float* A, const float* B, const Geometry& g, T* out,       \
                     float lo, float hi, const float* s1, const float* s2, const float* ws, const SolveArgs& sa,    \
                     cudaStream_t s);
STYLECAM_DECLARE(float)
STYLECAM_DECLARE(__half)
STYLECAM_DECLARE(__nv_bfloat16)
// Between the passes (defined in masked_recon_f32.cu): one thread per (region, channel).
void launch_solve(const float* s1, const float* s2, const float* ws, const SolveArgs& sa, cudaStream_t s);

// The body of each dtype's translation unit: the launchers with their K (and VEC) dispatch.
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

#define STYLECAM_LAUNCH(pdl, kernel, ...)                                                                         \
  do {                                                                                                            \
    static int per_sm = 0;                 /* one per kernel instantiation: asked once */                       \
    if (per_sm == 0) per_sm = blocks_per_sm(kernel);                                                              \
    const Shape sh = launch_shape(static_cast<int64_t>(g.H) * g.W, g.C, g.K, per_sm * g.sms);                     \
    launch(pdl, kernel, dim3(sh.tiles, sh.groups), dim3(kThreads), s, __VA_ARGS__);                              \
  } while (0)

#define STYLECAM_INSTANTIATE(T)                                                                                   \
  void launch_moments(const T* f, const float* w, const Geometry& g, float* s1, float* s2, float* ws,          \
                      cudaStream_t s) {                                                      \
    constexpr int V = 16 / sizeof(T);                                                                             \
    if (g.vec && g.p1.lanes) {                                                                                    \
      const int64_t P = static_cast<int64_t>(g.H) * g.W;                                                          \
      const dim3 block(kLanes, kRows);                                                                            \
      const unsigned cg = static_cast<unsigned>((g.C + kLanes - 1) / kLanes);                                     \
      STYLECAM_DISPATCH_K(g.K,                                                                                    \
        constexpr int MT = lanes_max_tile(KK);                                                                    \
        const int tile = g.p1.tile_div == 2 ? MT / 2 : MT;                                                        \
        const int span = lanes_span(g.p1, P, cg, tile, g.sms, V);                                                 \
        const dim3 grid(static_cast<unsigned>((P + span - 1) / span), cg);                                        \
        if (g.p1.lpc == 4 && g.p1.prefetch)      /* the combinations set_tuning accepts */                     \
          launch(g.pdl, moments_lanes_kernel<T, KK, MT, true, 4>, grid, block, s, f, g.sc, w, g.C, P, span, s1, s2, ws, g.early);         \
        else if (g.p1.lpc == 4 && g.p1.l2)                                                                        \
          launch(g.pdl, moments_lanes_kernel<T, KK, MT, false, 4, 1>, grid, block, s, f, g.sc, w, g.C, P, span, s1, s2, ws, g.early);     \
        else if (g.p1.lpc == 4 && g.p1.p256)                                                                      \
          launch(g.pdl, moments_lanes_kernel<T, KK, MT, false, 4, 2>, grid, block, s, f, g.sc, w, g.C, P, span, s1, s2, ws, g.early);     \
        else if (g.p1.lpc == 4)                                                                                   \
          launch(g.pdl, moments_lanes_kernel<T, KK, MT, false, 4>, grid, block, s, f, g.sc, w, g.C, P, span, s1, s2, ws, g.early);        \
        else if (g.p1.prefetch)                                                                                   \
          launch(g.pdl, moments_lanes_kernel<T, KK, MT / 2, true>, grid, block, s, f, g.sc, w, g.C, P, span, s1, s2, ws, g.early);        \
        else launch(g.pdl, moments_lanes_kernel<T, KK, MT, false>, grid, block, s, f, g.sc, w, g.C, P, span, s1, s2, ws, g.early));       \
    } else if (g.vec) {                                                                                           \
      STYLECAM_DISPATCH_K(g.K, STYLECAM_LAUNCH(false, (moments_kernel<T, KK, V>),                                        \
          f, g.sc, g.sh, g.sw, w, g.C, g.H, g.W, sh.group, s1, s2, ws));                                          \
    } else {                                                                                                      \
      STYLECAM_DISPATCH_K(g.K, STYLECAM_LAUNCH(false, (moments_kernel<T, KK, 1>),                                        \
          f, g.sc, g.sh, g.sw, w, g.C, g.H, g.W, sh.group, s1, s2, ws));                                          \
    }                                                                                                             \
  }                                                                                                               \
  void launch_affine(const T* f, const float* w, const float* A, const float* B, const Geometry& g, T* out,    \
                        float lo, float hi, const float* s1, const float* s2, const float* ws, const SolveArgs& sa, \
                        cudaStream_t s) {                                                                         \
    constexpr int V = 16 / sizeof(T);                                                                             \
    if (g.vec && g.p1.lanes && g.p1.rev) {  /* pass 1's spans and channel groups, walked backwards */             \
      const int64_t P = static_cast<int64_t>(g.H) * g.W;                                                          \
      const unsigned cg = static_cast<unsigned>((g.C + kLanes - 1) / kLanes);                                     \
      STYLECAM_DISPATCH_K(g.K,                                                                                    \
        constexpr int MT = lanes_max_tile(KK);                                                                    \
        const int span = lanes_span(g.p1, P, cg, MT, g.sms, V);                                                   \
        const dim3 grid(static_cast<unsigned>((P + span - 1) / span), cg);                                        \
        launch(g.pdl, affine_lanes_kernel<T, KK, MT>, grid, dim3(kLanes, kRows), s, f, g.sc, w, A, B, g.C, P, span, \
               out, lo, hi, s1, s2, ws, sa, g.early));                                                            \
    } else if (g.vec && g.p1.l2) {                                                                                \
      STYLECAM_DISPATCH_K(g.K, STYLECAM_LAUNCH(g.pdl, (affine_kernel<T, KK, V, true>),                                   \
          f, g.sc, g.sh, g.sw, w, A, B, g.C, g.H, g.W, sh.group, out, lo, hi, s1, s2, ws, sa, g.early));                   \
    } else if (g.vec) {                                                                                           \
      STYLECAM_DISPATCH_K(g.K, STYLECAM_LAUNCH(g.pdl, (affine_kernel<T, KK, V>),                                         \
          f, g.sc, g.sh, g.sw, w, A, B, g.C, g.H, g.W, sh.group, out, lo, hi, s1, s2, ws, sa, g.early));                   \
    } else {                                                                                                      \
      STYLECAM_DISPATCH_K(g.K, STYLECAM_LAUNCH(g.pdl, (affine_kernel<T, KK, 1>),                                         \
          f, g.sc, g.sh, g.sw, w, A, B, g.C, g.H, g.W, sh.group, out, lo, hi, s1, s2, ws, sa, g.early));                   \
    }                                                                                                             \
  }

}  // namespace stylecam
