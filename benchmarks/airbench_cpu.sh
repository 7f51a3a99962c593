#!/usr/bin/env bash
# airbench94's own code on this CPU, in fp32: the reference the fast CIFAR recipe (#34) is timed against.
#
#   bash benchmarks/airbench_cpu.sh AIRBENCH_CLONE [OUT_DIR]
#
# AIRBENCH_CLONE: a clone of github.com/KellerJordan/cifar10-airbench (its legacy/airbench94.py is the
# script the paper times). Nothing of it enters this project: the script is copied to OUT_DIR and changed
# only where it cannot run on a CPU, each change a sed line below -- fp16 -> fp32 (.half() -> .float()),
# the device 'cuda' -> 'cpu', CUDA event timers -> time.perf_counter, cuda.synchronize -> nothing,
# 25 runs -> 1. Its data: train.pt/test.pt (uint8 NHWC, as torchvision's CIFAR10 gives them) written from
# the data eva reads (EVA_DATA_DIR: the JPEG copy here, real CIFAR-10 for users), outside the timing.
# The whole process is timed (/usr/bin/time style, by bash's `time`): loading, whitening, 9.9 epochs,
# the per-epoch test it prints, the final test-time-augmented test.
set -euo pipefail
SRC=${1:?usage: airbench_cpu.sh AIRBENCH_CLONE [OUT_DIR]}
OUT=${2:-lightning_logs/airbench_cpu}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$HERE/.venv/bin/python}
mkdir -p "$OUT/cifar10"
if [[ -d "$SRC/.git" || -f "$SRC/HEAD" ]] && git -C "$SRC" cat-file -e HEAD:legacy/airbench94.py 2>/dev/null; then
  git -C "$SRC" show HEAD:legacy/airbench94.py > "$OUT/airbench94_cpu.py"
  git -C "$SRC" rev-parse HEAD > "$OUT/airbench_commit.txt"
else
  cp "$SRC/legacy/airbench94.py" "$OUT/airbench94_cpu.py"
fi
sed -i \
  -e 's/\.half()/.float()/g' \
  -e 's/gpu=0)/gpu="cpu")/' \
  -e 's/net = net\.float()\.cuda()/net = net.float()/' \
  -e 's/torch\.cuda\.Event(enable_timing=True)/_CpuEvent()/' \
  -e 's/torch\.cuda\.synchronize()/pass/' \
  -e 's/for run in range(25)/for run in range(1)/' \
  -e 's/^import torch$/import torch, time\nclass _CpuEvent:  # CPU stand-in for torch.cuda.Event (record, elapsed_time in ms)\n    def record(self): self.t = time.perf_counter()\n    def elapsed_time(self, end): return 1e3 * (end.t - self.t)/' \
  "$OUT/airbench94_cpu.py"
! grep -n "cuda\|half()" "$OUT/airbench94_cpu.py" | grep -v "cudnn\|CPU stand-in" || { echo "airbench_cpu.sh: a CUDA call is left" >&2; exit 1; }
# the data, outside the timing: eva's own reader (JPEG copy or torchvision files), as torchvision's arrays
PYTHONPATH="$HERE" "$PY" - "$OUT/cifar10" <<'EOF'
import sys, numpy as np, torch
from eva_lightning.data.datamodule import VisionDataModule
dm = VisionDataModule(dataset="cifar10")
for split in ("train", "test"):
    data = dm._load(split)
    # torchvision's CIFAR-10 training images come in no class order, and airbench whitens from the first
    # 5,000: a folder copy stored class by class is shuffled once (fixed seed) to match
    order = np.random.default_rng(0).permutation(len(data.labels))
    torch.save({"images": torch.as_tensor(data.images[order]), "labels": torch.as_tensor(data.labels[order]),
                "classes": list(data.classes)}, f"{sys.argv[1]}/{split}.pt")
    print(split, tuple(data.images.shape), data.images.dtype)
EOF
cd "$OUT"
{ time "$PY" airbench94_cpu.py ; } 2>&1 | tee airbench_cpu.log
