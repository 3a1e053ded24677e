#!/usr/bin/env bash
# The commands behind every figure in the README, in the order they were run.
# Results land in docs/results/ (JSON) and docs/ (pictures).  Needs ../shared for the held-out
# portraits and the research-set pairs; everything else uses the bundled assets.
# The GPU section's figures (docs/results/kernel_gpu*.json|txt, fps_gpu*.json) come from calls of
# `BUDGET=... bash benchmarks/gpu_session.sh` on lent GPUs (its $OUT/kernel.json, kernel.log and
# fps_gpu.json, copied into docs/results/: kernel_gpu*, fps_gpu.json from the H200 of session 3,
# *_h100* from the H100: kernel_gpu_h100.json, _profile.txt and _ncu.txt from session 9's kernel.json
# and kernel.log (SKIP_TRAIN=1; session 8's as kernel_gpu_h100_session8*), fps_gpu_h100_session9.json
# from session 9's fps_gpu.json, and from session 8: fps_gpu_h100.json from its --channels-last run,
# fps_gpu_h100_nchw.json and fps_gpu_h100_profile.txt from its NCHW run, then the default; session 11
# (SKIP_TRAIN=1 GATE_ON_KERNEL=0 BUDGET=470): kernel_gpu_h100_session11.json and _ncu.txt from its
# kernel.json and kernel.log, fps_gpu_h100_session11.json, _regions.json and _graph.json from its
# fps_gpu*.json, fps_gpu_h100_session11_profile.txt from session.log's "== fps" part, and
# gpu_tests_h100_session11.txt from gpu_tests.log; session 12 (SKIP_TRAIN=1 GATE_ON_KERNEL=0 SKIP_NCU=1
# SKIP_FPS=1 BUDGET=300): kernel_gpu_h100_session12.json from its kernel.json, gpu_tests_h100_session12.txt
# from gpu_tests.log); session 22 (H200, five calls): SKIP_MEASURE=1 LR=1e-4 BUDGET=585 (its session.log as
# gpu_session_h200_session22.log, train_speed_gpu.json and train_profile_gpu.txt as
# train_speed_gpu_h200_session22.json and train_profile_gpu_h200_session22.txt, the decoder), then
#   python benchmarks/kernel.py --rounds 3 --moments auto,auto+early,auto+p256 --json kernel_gpu_h200_session22.json
#   python benchmarks/fps.py --devices cuda --fp16 --backends torch --regions none --sizes 480,720,1080 --frames 20 \
#     --json fps_gpu_h200_session22.json   (and --regions portrait --fixed-regions: _regions.json;
#     --sizes 720 --no-cuda-graph: _eager.json)
#   python -m pytest -q -m gpu tests/test_kernels.py -x > gpu_tests_h200_session22.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mkdir -p docs/results
$PY benchmarks/autoencoder.py --holdout --layer relu3_1 --json docs/results/autoencoder_relu3_1.json --grid docs/autoencoder_relu3_1.png
$PY benchmarks/autoencoder.py --holdout --layer relu4_1 --json docs/results/autoencoder_relu4_1.json
$PY benchmarks/autoencoder.py --holdout --layer relu3_1 --max-side 320 --json docs/results/autoencoder_relu3_1_320.json
$PY benchmarks/autoencoder.py --holdout --layer relu3_1 --decoder weights/decoder_relu3_1_wide.pt \
  --json docs/results/autoencoder_relu3_1_wide.json --grid docs/autoencoder_relu3_1_wide.png
$PY benchmarks/autoencoder.py --training 16 --layer relu3_1 --decoder weights/decoder_relu3_1_wide.pt \
  --json docs/results/autoencoder_relu3_1_wide_training.json
$PY benchmarks/dormant.py --json docs/results/dormant_shipped.json
$PY benchmarks/dormant.py --holdout --json docs/results/dormant_shipped_holdout.json
$PY benchmarks/inversion.py --holdout --limit 4 --steps 150 --starts decoder --threads 2 --max-side 256 \
  --decoder weights/decoder_relu3_1_wide.pt --json docs/results/inversion_relu3_1_wide.json --grid docs/inversion_relu3_1_wide.jpg
$PY benchmarks/grid.py --out docs/grid_modes.png --strip docs/demo_strip.png
$PY benchmarks/last_layer.py --json docs/results/last_layer_relu3_1.json          # session 23
$PY benchmarks/still.py --json docs/results/still_cpu.json
$PY benchmarks/still.py --decoder wide --json docs/results/still_cpu_wide.json          # session 23: right after
STYLECAM_MALLOC=system $PY benchmarks/still.py --json docs/results/still_cpu_system_malloc.json   # session 21
$PY benchmarks/fps.py --backends torch,onnx --sizes 240,360,480,720,1080 --frames 6 --json docs/results/fps_cpu.json --png docs/fps_cpu.png
STYLECAM_MALLOC=system $PY benchmarks/fps.py --backends torch,onnx --sizes 240,360,480,720,1080 --frames 6 \
  --json docs/results/fps_cpu_system_malloc.json          # session 21: the same without malloc keeping freed memory
$PY benchmarks/fps.py --backends onnx,onnx-int8 --sizes 240,360,480,720,1080 --frames 6 \
  --json docs/results/fps_cpu_int8.json                  # session 24: the INT8 encoder (--int8)
$PY benchmarks/int8.py --json docs/results/int8_cpu.json                           # session 24, rerun in 25
$PY benchmarks/memory.py --json docs/results/memory_cpu.json                       # session 25: --size vs free memory
$PY benchmarks/export_parity.py --json docs/results/export_parity_cpu.json    # session 26: export parity (README)
$PY benchmarks/still.py --backends onnx,onnx-int8 --json docs/results/still_cpu_int8.json   # session 24
$PY benchmarks/soak.py --backend onnx-int8 --json docs/results/soak_onnx_int8.json        # session 24
$PY benchmarks/temporal.py --frames 32 --size 360 --deflicker 0.5,0.6,0.8 --json docs/results/temporal.json
$PY benchmarks/temporal.py --frames 32 --size 360 --modes adain --deflicker "" --json docs/results/deflicker_cost.json
$PY benchmarks/peers.py --frames 8 --size 384 --json docs/results/peers.json --grid docs/peers.png
$PY benchmarks/quality.py --size 256 --gatys-iterations 500 --threads 1 --json docs/results/quality.json --grid docs/quality.png
$PY benchmarks/quality.py --size 256 --threads 1 --decoder wide --methods photo,linear,linear-iter500,adain,wct,gram \
  --json docs/results/quality_wide_s11.json --grid /tmp/quality_wide_s11.png        # session 11's wide decoder
$PY benchmarks/quality.py --size 256 --threads 1 --methods photo,linear,linear-iter500,adain,wct,gram \
  --json docs/results/quality_half_s12.json --grid /tmp/quality_half_s12.png        # session 12's half-width decoder
$PY benchmarks/quality.py --size 256 --threads 1 --methods photo,linear,linear-iter500,adain,wct,gram \
  --json docs/results/quality_half_s22.json --grid /tmp/quality_half_s22.png        # session 22's half-width decoder
# (docs/results/quality_half_s20.json: the same command in session 20, with that session's decoder)
$PY benchmarks/train_speed.py --json docs/results/train_speed.json
$PY benchmarks/pack_quality.py --json docs/results/pack_quality.json
$PY benchmarks/soak.py --json docs/results/soak_onnx.json                            # session 21
