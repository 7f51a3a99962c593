#!/usr/bin/env bash
# `make run`'s command at two commits, one after the other on this machine: wall time and final test accuracy.
#   EVA_DATA_DIR=../shared/data bash benchmarks/make_run_speed.sh BEFORE_COMMIT AFTER_COMMIT [SEED]
# (#28: 2671b22 516d0c0 101). Each commit is checked out in a temporary git worktree and run with this
# checkout's Python (.venv); pause every other job on the machine first: the figures are wall times.
set -euo pipefail
cd "$(dirname "$0")/.."
py="$PWD/.venv/bin/python"; seed="${3:-101}"; out="$(mktemp -d)"
for commit in "$1" "$2"; do
  tree="$out/tree_$commit"; git worktree add -q --detach "$tree" "$commit"
  start=$(date +%s.%N)
  (cd "$tree" && PYTHONPATH="$tree" MPLBACKEND=Agg "$py" -m eva_lightning fit --config configs/s5.yaml \
    --seed_everything "$seed" --trainer.logger.init_args.save_dir "$out/runs" --trainer.logger.init_args.name "$commit" \
    > "$out/$commit.log" 2>&1)
  wall=$("$py" -c "import time; print(f'{time.time() - $start:.0f}')")
  echo "$commit: wall ${wall} s, $(grep -m1 'test accuracy' "$out/$commit.log" | xargs)"
  git worktree remove --force "$tree"
done
echo "logs and runs: $out"
