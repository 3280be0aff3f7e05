#!/usr/bin/env bash
# Benchmarks lesion_jax on an accelerator, in one command:
#
#   benchmarks/accelerator.sh [--quick] [--out=DIR]
#
# 1. what the install needs, and what is installed (JAX's CUDA wheels beside the CPU TensorFlow);
# 2. the device JAX sees (and nvidia-smi's line where there is one);
# 3. every train-step benchmark (train_step.py: the U-Net, ResNet-18, LeNet-5; classifier_step.py:
#    the Task 3 ResNet-18 and ResNet-50; fcrn_step.py, lfn_step.py, gan_step.py, inpainter_step.py,
#    maskrcnn_step.py) in float32 and in bfloat16 (--precision, the
#    run.precision policies), each in a process of its own: ms/step, img/s, the step's device memory
#    from XLA's memory analysis and the process's peak device memory (benchmarks/peak_memory.py);
#    no PyTorch reference (--no_torch: the CPU reference says nothing about a GPU);
# 4. a short end-to-end run of the U-Net and of LeNet-5 under bfloat16 through the verbs:
#    experiments.train (train, then score the test split), experiments.evaluate, experiments.predict
#    on a few photos, each with its peak device memory.
#
# Without --quick it refuses to run where JAX sees no accelerator (on a CPU, run the benchmarks
# themselves, which time PyTorch beside JAX: docs/benchmarks.md). --quick shrinks every workload (tiny images, a few steps, the tiny synthetic dataset) to
# check the script itself on a CPU. Everything goes under --out=DIR (default: $OUT if set, else
# runs/accelerator_<date>): summary.txt (the lines that matter, with each step's wall time),
# logs/<step>.log (each step's whole output), tfds/ (the synthetic data, rendered once), runs/,
# photos/, predict/. Exit status: 0 when every step passed, 1 otherwise (all steps still run).
# PYTHON picks the interpreter (default: python).
set -uo pipefail

QUICK=0
OUT_DIR="${OUT:-}"
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    --out=*) OUT_DIR="${arg#--out=}" ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "accelerator.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2
PY="${PYTHON:-python}"
OUT_DIR="${OUT_DIR:-runs/accelerator_$(date +%Y%m%d_%H%M%S)}"
mkdir -p "$OUT_DIR/logs" || exit 2
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
SUMMARY="$OUT_DIR/summary.txt"
: > "$SUMMARY"
START=$SECONDS
FAILED=()

say() { echo "$@" | tee -a "$SUMMARY"; }

# The lines of a step's log worth keeping in the summary: the device, the timings, the memory, the
# scores (`name/metric=value ...`), predict's count.
KEEP='^jax |matmul peak|ms/step|step memory|peak device memory|JAX first call|(^| )[a-z_]+/[a-z_]+=[-0-9.]|^Predicted '

# step NAME ARGS...: `python benchmarks/peak_memory.py ARGS...`, its output in logs/NAME.log; the
# summary gets its KEEP lines, or on failure the log's last lines.
step() {
  local name="$1"; shift
  local begin=$SECONDS
  if "$PY" benchmarks/peak_memory.py "$@" > "$OUT_DIR/logs/$name.log" 2>&1; then
    say "== $name: ok in $((SECONDS - begin)) s"
    grep -E "$KEEP" "$OUT_DIR/logs/$name.log" | sed 's/^/   /' | tee -a "$SUMMARY"
  else
    FAILED+=("$name")
    say "== $name: FAILED in $((SECONDS - begin)) s (logs/$name.log ends:)"
    tail -n 8 "$OUT_DIR/logs/$name.log" | sed 's/^/   /' | tee -a "$SUMMARY"
  fi
}

say "lesion_jax on an accelerator ($( ((QUICK)) && echo "--quick: shortened workloads, a check of this script" || echo "full workloads")), $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
say "output: $OUT_DIR"
say ""
say "== install"
say "   An NVIDIA GPU needs JAX's CUDA 12 wheels beside the CPU TensorFlow that reads the data:"
say "     pip install -e '.[cuda]'   # setup.cfg's [cuda] extra: jax[cuda12], same version range as jax"
say "   (tensorflow-cpu stays: TensorFlow only reads and augments data, on the CPU; lesion_jax hides"
say "   accelerators from it.) Installed:"
"$PY" -m pip list 2>/dev/null | grep -iE '^(jax|jaxlib|jax[-_]cuda12[-_](plugin|pjrt)|nvidia[-_]cudnn[-_]cu12|tensorflow|tensorflow[-_]cpu|flax|optax) ' \
  | sed 's/^/     /' | tee -a "$SUMMARY"
say ""
say "== device"
BACKEND="$("$PY" -c 'import jax; print(jax.default_backend())' 2>>"$OUT_DIR/logs/device.log")"
"$PY" -c 'import jax; print("   jax", jax.__version__, "backend", jax.default_backend(), "devices", jax.devices())' \
  2>>"$OUT_DIR/logs/device.log" | tee -a "$SUMMARY"
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | sed 's/^/   nvidia-smi: /' | tee -a "$SUMMARY"
fi
if [[ -z "$BACKEND" ]]; then
  say "   jax does not import (logs/device.log)"; exit 1
fi
if [[ "$BACKEND" == "cpu" && $QUICK -eq 0 ]]; then
  say "   JAX sees no accelerator (backend cpu): install the accelerator's wheels (above), or run with --quick"
  say "   to check this script on the CPU."
  exit 2
fi

# --- 3. the train-step benchmarks, in float32 and in bfloat16 ------------------------------------
if ((QUICK)); then
  TRAIN_STEP=(--unet=32:4:4 --classifiers=32:4)
  CLASSIFIER_STEP=(--model=resnet18,resnet50 --image_size=32 --width=0.125 --batch_size=2 --repeats=1 --window_s=0.1)
  FCRN=(--variants=fcrn_small:32:2 --repeats=1 --window_s=0.1)
  LFN=(--variants=lfn_narrow:16:4 --repeats=1 --window_s=0.1)
  GAN=(--image_size=16 --batch_size=4 --features=8 --repeats=1 --steps=1 --warmup=1)
  INPAINTER=(--configs=8:2:32:2 --repeats=1 --window_s=0.1)
  MASKRCNN=(--shape=task --size=64 --batch=1 --repeats=1 --window_s=0.1)
else  # each benchmark's own workloads, as in docs/benchmarks.md's CPU table
  TRAIN_STEP=()
  CLASSIFIER_STEP=(--model=resnet18,resnet50)
  FCRN=()
  LFN=()
  GAN=()
  INPAINTER=()
  MASKRCNN=(--repeats=2)
fi
say ""
for precision in float32 bfloat16; do
  # --no_xla_defaults: the XLA:CPU-flag comparison says nothing on an accelerator (nor in a check).
  shared=(--precision="$precision" --no_torch --rounds=1)
  step "train_step_$precision" benchmarks/train_step.py "${shared[@]}" --no_xla_defaults "${TRAIN_STEP[@]}"
  step "classifier_step_$precision" benchmarks/classifier_step.py "${shared[@]}" --no_xla_defaults "${CLASSIFIER_STEP[@]}"
  step "fcrn_step_$precision" benchmarks/fcrn_step.py "${shared[@]}" --no_xla_defaults "${FCRN[@]}"
  step "lfn_step_$precision" benchmarks/lfn_step.py "${shared[@]}" --no_xla_defaults "${LFN[@]}"
  step "gan_step_$precision" benchmarks/gan_step.py "${shared[@]}" --no_xla_defaults "${GAN[@]}"
  step "inpainter_step_$precision" benchmarks/inpainter_step.py "${shared[@]}" --no_xla_defaults "${INPAINTER[@]}"
  step "maskrcnn_step_$precision" benchmarks/maskrcnn_step.py "${shared[@]}" "${MASKRCNN[@]}"
done

# --- 4. train + evaluate + predict, U-Net and LeNet-5, under bfloat16 -----------------------------
DATA="$OUT_DIR/tfds"
if ((QUICK)); then
  DATASET=synthetic_lesions/tiny
  SEGMENTER=(--config.input.image_size=32 --config.input.batch_size=8 --config.model.features=4
             --config.model.levels=2 --config.run.num_steps=4 --config.run.eval_every=4 --config.run.log_every=2)
  CLASSIFIER=(--config.input.image_size=32 --config.input.batch_size=8 --config.run.num_steps=4
              --config.run.eval_every=4 --config.run.log_every=2)
  PHOTOS=2
else  # the configs' own networks and images (64 px), fewer steps
  DATASET=synthetic_lesions
  SEGMENTER=(--config.run.num_steps=300 --config.run.eval_every=150)
  CLASSIFIER=(--config.run.num_steps=300 --config.run.eval_every=150)
  PHOTOS=8
fi
INPUT=(--config.input.dataset="$DATASET" --config.input.data_dir="$DATA" --config.run.precision=bfloat16)
say ""
step unet_train -m experiments.train --config=experiments/configs/segmentation/unet.py \
  --workdir="$OUT_DIR/runs/unet" "${INPUT[@]}" "${SEGMENTER[@]}"
# A few test images of the dataset as photo files, for predict.
if ! "$PY" - "$DATASET" "$DATA" "$OUT_DIR/photos" "$PHOTOS" > "$OUT_DIR/logs/photos.log" 2>&1 <<'EOF'
import os
import sys

from lesion_jax import io
from lesion_jax.data import pipeline

dataset, data_dir, out, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
os.makedirs(out, exist_ok=True)
examples = pipeline.get_builder(dataset, data_dir).as_dataset(split=f"test[:{count}]").as_numpy_iterator()
for i, example in enumerate(examples):
  io.write_png(os.path.join(out, f"photo_{i}.png"), example["image"])
EOF
then
  FAILED+=(photos)
  say "== photos: FAILED (logs/photos.log)"
fi
step unet_evaluate -m experiments.evaluate --workdir="$OUT_DIR/runs/unet" --split=test
step unet_predict -m experiments.predict --workdir="$OUT_DIR/runs/unet" --images="$OUT_DIR/photos/*.png" \
  --out="$OUT_DIR/predict/unet" --overwrite
step lenet_train -m experiments.train --config=experiments/configs/classification/lenet.py \
  --workdir="$OUT_DIR/runs/lenet" "${INPUT[@]}" "${CLASSIFIER[@]}"
step lenet_evaluate -m experiments.evaluate --workdir="$OUT_DIR/runs/lenet" --split=test
step lenet_predict -m experiments.predict --workdir="$OUT_DIR/runs/lenet" --images="$OUT_DIR/photos/*.png" \
  --out="$OUT_DIR/predict/lenet" --overwrite

say ""
if ((${#FAILED[@]})); then
  say "FAILED: ${FAILED[*]} (logs in $OUT_DIR/logs); total $((SECONDS - START)) s"
  exit 1
fi
say "all steps passed; total $((SECONDS - START)) s"
