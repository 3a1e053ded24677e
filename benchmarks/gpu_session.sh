#!/usr/bin/env bash
# Everything this project needs a lent GPU for, in ONE device call (device time is 15 minutes a
# session, start-up included): the gpu-marked tests (fused kernel against its CPU reference, FP16
# engines), the kernel benchmark, the GPU FPS table, then decoder training until the time is up.
#
# Prepare on the CPU machine (once; the pack is ignored by git, never committed):
#     echo /gpu_pack/ >> .git/info/exclude
#     python -m training.pack_data --out gpu_pack --quality 80 --limit-mib 36 --with-encoder
# then call the device tool with
#     command: bash benchmarks/gpu_session.sh      carry: ["gpu_pack"]      timeout_s: 590
# Results come back in $OUT (at most 8 files): gpu_tests.log, kernel.json, fps_gpu.json,
# train.log, decoder_relu3_1.pt, decoder_relu3_1_train.pt.  Copy the last two into weights/ and
# weights/checkpoints/ only if benchmarks/autoencoder.py says the decoder improved.
#
# The device image has PyTorch, OpenCV (headless), h5py, onnx and onnxruntime but no MediaPipe,
# so the FPS table there runs with --regions none (segmentation is a CPU stage either way).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-out/gpu_session}
mkdir -p "$OUT" runs
PY=${PY:-python3}
START=$(date +%s)
BUDGET=${BUDGET:-560}          # seconds for the whole script
left() { echo $(( BUDGET - ($(date +%s) - START) )); }

if [ -f gpu_pack/encoder.pt ]; then
  cp gpu_pack/encoder.pt weights/vgg16_hed_bsds500.pt
  cp gpu_pack/encoder.pt.sha256 weights/vgg16_hed_bsds500.pt.sha256
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

echo "== gpu tests ($(left) s left)"
timeout 200 $PY -m pytest -q -m gpu tests -rs 2>&1 | tee "$OUT/gpu_tests.log" | tail -25

echo "== kernel benchmark ($(left) s left)"
timeout 60 $PY benchmarks/kernel.py --json "$OUT/kernel.json" 2>&1 | tail -20

echo "== fps ($(left) s left)"
timeout 100 $PY benchmarks/fps.py --devices cuda --fp16 --backends torch --regions none \
  --sizes 480,720,1080 --frames 20 --json "$OUT/fps_gpu.json" 2>&1 | tail -15

T=$(( $(left) - 40 ))
if [ "$T" -gt 60 ] && [ -d gpu_pack/photos ]; then
  echo "== training relu3_1 for $T s"
  mkdir -p runs/gpu_relu3_1
  cp weights/checkpoints/decoder_relu3_1_train.pt runs/gpu_relu3_1/checkpoint.pt
  timeout $(( T + 30 )) $PY -m training.train_decoder --layer relu3_1 --device cuda --resume \
    --photos gpu_pack/photos --paintings gpu_pack/paintings --run-dir runs/gpu_relu3_1 \
    --out "$OUT/decoder_relu3_1.pt" --crop 256 --batch 8 --iterations 80000 --lr 5e-4 \
    --max-minutes "$(awk "BEGIN{print $T/60}")" --checkpoint-minutes 2 --eval-every 1000 2>&1 \
    | tr '\r' '\n' | grep -v "it/s\]$" | tee "$OUT/train.log" | tail -15
  cp runs/gpu_relu3_1/checkpoint.pt "$OUT/decoder_relu3_1_train.pt" 2>/dev/null || true
fi
echo "== done in $(( $(date +%s) - START )) s"
