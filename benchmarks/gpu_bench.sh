#!/bin/bash
# The S11 speed check on one GPU (about 2-3 minutes on an H100), results as JSON.
#
#   ../shared/device/stage.sh cifar10            # here: wheels + the CIFAR-10 JPEG copy into .device/
#   source .device/prelude.sh && bash benchmarks/gpu_bench.sh "$OUT"     # on the GPU machine
#
# 1. S11 as configured (configs/cifar10_data.yaml + configs/s11.yaml: loader batched, bf16-mixed, channels_last, cudnn benchmark,
#    LR range test -> one-cycle, 24 epochs) through `eva fit`, then the same config in the plain
#    loop (benchmarks/plain_loop.py) with the LR eva used: train time, accuracy, ratio eva/plain.
# 2. The DataLoader + albumentations path (data.loader=torch, 15 workers), 2 epochs, eva fit only,
#    GPU utilisation sampled by nvidia-smi.
# 3. Optional (COMPILE=1): step 1's eva fit with model.compile=true, 24 epochs.
# DL_CONFIG=s9 (or s8, s10) runs step 2 on that config instead (issue 6 asks for S8-S10's GPU
# utilisation on the DataLoader path), DL_WORKERS sets its workers (default 15).
# Writes $OUT/{s11_gpu.json, dataloader.json, gpu_util.txt, bench.log, summary.json};
# the summary is printed last. Logs and checkpoints go to /tmp/eva-bench, not $OUT.
# Needs, beside the checkout, .device/ staged by ../shared/device/stage.sh (wheels and data). Its
# three legs together can take 750 s, over one device command's 600 s: benchmarks/gpu_all.sh runs
# step 1's measurement within its 540 s plan (and its --rehearse, tested in CI, covers it on a CPU).
# EPOCHS / EXTRA (eva overrides for every run) shrink it for a dry run on a CPU, e.g.
#   EPOCHS=1 EXTRA="--trainer.accelerator=cpu --trainer.precision=32-true --trainer.benchmark=false
#   --trainer.limit_train_batches=2 --trainer.limit_val_batches=1 --data.batch_size=16
#   --model.init_args.schedule.peak_epoch=0.5" (the range test still takes its 100 steps)
set -uo pipefail
out=${1:?usage: gpu_bench.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ -z "${EVA_DATA_DIR:-}" ] && [ -f .device/prelude.sh ]; then source .device/prelude.sh || exit 1; fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$root PYTHONUNBUFFERED=1
work=/tmp/eva-bench
py=${PYTHON:-python3}
EXTRA=${EXTRA:-}
summarize() {
$py - "$out" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def load(name):
    p = out / name
    return json.loads(p.read_text()) if p.exists() else None
gpu, dl, comp = load("s11_gpu.json"), load("dataloader.json"), load("s11_compile.json")
util = [float(v) for v in (out / "gpu_util.txt").read_text().split() if v.replace(".", "").isdigit()] \
    if (out / "gpu_util.txt").exists() else []
s = {}
if gpu:
    e, p = gpu["eva_runs"][0], gpu["plain_runs"][0]
    s["gpu_loader"] = {
        "device": gpu["machine"]["gpu"], "torch": gpu["machine"]["torch"], "epochs": e["epochs"],
        "eva_train_s": round(sum(e["train_s"]), 2), "eva_epoch_total_s": round(sum(e["epoch_s"]), 2),
        "eva_fit_wall_s": round(e["fit_wall_s"], 2), "eva_val_acc": e["val_acc"], "lr": e["lr"],
        "plain_train_s": round(sum(p["train_s"]), 2),
        "plain_epoch_total_s": round(sum(p["train_s"]) + sum(p["eval_s"]), 2), "plain_val_acc": p["val_acc"][-1],
        "ratio_train": round(sum(e["train_s"]) / sum(p["train_s"]), 3),
        "ratio_epoch_total": round(sum(e["epoch_s"]) / (sum(p["train_s"]) + sum(p["eval_s"])), 3),
        "eva_train_epoch_median_s": round(gpu["eva"]["train_epoch_s_median"], 3),
        "plain_train_epoch_median_s": round(gpu["plain"]["train_epoch_s_median"], 3),
        "eva_images_per_s": round(gpu["eva"]["train_images_per_s"]),
        "steps_per_epoch": e["steps_per_epoch"],
        "eva_syncs_epoch_1": e["syncs_epoch_1"],
    }
if dl:
    e = dl["eva_runs"][0]
    s["dataloader"] = {
        "config": dl["config"], "overrides": dl["overrides"], "epochs": e["epochs"], "train_s": [round(t, 2) for t in e["train_s"]],
        "train_epoch_median_s": round(dl["eva"]["train_epoch_s_median"], 3),
        "images_per_s": round(dl["eva"]["train_images_per_s"]), "train_loader": e["train_loader"],
        "gpu_util_mean_pct": round(sum(util) / len(util), 1) if util else None,
        "gpu_util_samples": len(util),
    }
if comp:
    e = comp["eva_runs"][0]
    s["gpu_loader_compile"] = {"eva_train_s": round(sum(e["train_s"]), 2), "train_s_first_epoch": round(e["train_s"][0], 2),
                               "train_s_rest": round(sum(e["train_s"][1:]), 2), "eva_val_acc": e["val_acc"]}
(out / "summary.json").write_text(json.dumps(s, indent=1))
print(json.dumps(s, indent=1))
EOF
}

{
  echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null)"
  $py -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"

  t0=$(date +%s)
  # decode the JPEG copy once (cached as .npz beside it) so that no timed run pays for it
  $py -c "
import time; t = time.time()
from eva_lightning.data import VisionDataModule
dm = VisionDataModule(dataset='cifar10', download=False); dm.setup('fit')
print(f'data ready in {time.time() - t:.1f} s: {len(dm.train_set)} train, {len(dm.val_set)} test')"

  echo "== 1. S11, loader batched, bf16, eva fit vs plain loop"
  timeout 300 $py benchmarks/run.py --config configs/s11.yaml --workdir $work --out "$out/s11_gpu.json" \
    ${EPOCHS:+--epochs $EPOCHS} -- $EXTRA > /dev/null
  summarize > /dev/null
  dl=${DL_CONFIG:-s11} workers=${DL_WORKERS:-15}
  echo "== 2. $dl, DataLoader + albumentations, $workers workers, 2 epochs"
  nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 250 > "$out/gpu_util.txt" 2>/dev/null &
  smi=$!
  timeout 150 $py benchmarks/run.py --config configs/$dl.yaml --workdir $work --out "$out/dataloader.json" \
    --epochs 2 --skip-plain -- --data.loader=torch --data.num_workers=$workers --data.pin_memory=true \
    --model.init_args.schedule.peak_epoch=1 $EXTRA > /dev/null
  kill $smi 2>/dev/null
  if [ "${COMPILE:-0}" = 1 ]; then
    echo "== 3. S11, loader batched, bf16, compile"
    timeout 300 $py benchmarks/run.py --config configs/s11.yaml --workdir $work --out "$out/s11_compile.json" \
      --skip-plain ${EPOCHS:+--epochs $EPOCHS} -- --model.init_args.compile=true $EXTRA > /dev/null
  fi
  echo "== done in $(( $(date +%s) - t0 )) s"
} 2>&1 | tee "$out/bench.log" | grep -E "^(==|eva |plain |data ready|torch )|Error|error"

summarize
