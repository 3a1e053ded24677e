// Kernels of stylecam's fused masked reconstruction for __nv_bfloat16 features (see masked_recon_kernels.cuh).
#include "masked_recon_kernels.cuh"

namespace stylecam {
STYLECAM_INSTANTIATE(__nv_bfloat16)
}  // namespace stylecam
