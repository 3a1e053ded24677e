// Kernels of stylecam's fused masked reconstruction for __half features (see masked_recon_kernels.cuh).
#include "masked_recon_kernels.cuh"

namespace stylecam {
STYLECAM_INSTANTIATE(__half)
}  // namespace stylecam
