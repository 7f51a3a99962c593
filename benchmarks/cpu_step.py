"""Where an epoch of a small config goes on the CPU: data path and training-step variants, side by side.

Times one batch of each variant in turn, round after round, so that a machine shared with other
work slows all variants alike; reports the median per batch and the implied epoch time.

Variants (each a batch of ``data.batch_size`` from the config's training split):
    data/albumentations   the DataLoader path's work: the pipeline per sample, then collate
    data/batched          the ``loader: batched`` path on the CPU: one batched op per transform
    step/eager            forward + backward + optimiser step, NCHW, as configured
    step/channels_last    the same in channels_last layout
    step/no_dropout       channels_last with the dropout layers removed (what dropout costs)
    step/bf16             channels_last under bf16 autocast (fast only on a CPU with AMX / AVX-512 BF16)
    eval/batch            a no-grad forward in eval mode, channels_last (the per-epoch test pass: 10k images)
    step/compile          channels_last through torch.compile (compile time reported separately)

    python benchmarks/cpu_step.py --config configs/s5.yaml [--rounds 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plain_loop import build  # noqa: E402

from eva_lightning.data.batch_augment import BatchAugment  # noqa: E402
from eva_lightning.data.transforms import build_pipeline  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, action="append", help="an eva config; repeat to compose, in order")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="add the torch.compile variant")
    parser.add_argument("--out", default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cli = build(args.config[0], [*(a for c in args.config[1:] for a in ("--config", c)), *args.overrides])
    dm, model = cli.datamodule, cli.model
    split = dm._load("train")
    bs = dm.batch_size
    n_train = len(split.labels)
    rng = np.random.default_rng(0)
    pipeline = build_pipeline(dm.train_specs, dm.mean, dm.std)
    batched = BatchAugment(pipeline)
    images_u8 = torch.from_numpy(split.images)
    labels = torch.from_numpy(split.labels.astype(np.int64))
    g = torch.Generator().manual_seed(0)

    def batch_idx():
        return rng.integers(0, n_train, size=bs)

    def data_albu():
        idx = batch_idx()
        return torch.stack([pipeline(image=split.images[i])["image"] for i in idx]), labels[idx]

    def data_batched():
        idx = torch.from_numpy(batch_idx())
        return batched(images_u8[idx], g), labels[idx]

    x, y = data_batched()
    x = x.contiguous()

    def stepper(net, memory_format, fwd=None, dtype=None):
        opt = model.optimizer_factory(net.parameters())
        fwd = net if fwd is None else fwd
        xx = x.contiguous(memory_format=memory_format)

        def step():
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                loss = F.cross_entropy(fwd(xx), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    import copy

    def channels_last(without_dropout: bool = False):
        net = copy.deepcopy(model.net).to(memory_format=torch.channels_last)
        if without_dropout:
            for module in list(net.modules()):
                for child, layer in list(module.named_children()):
                    if isinstance(layer, torch.nn.Dropout2d | torch.nn.Dropout):
                        setattr(module, child, torch.nn.Identity())
        return net

    eval_net, xx = channels_last().eval(), x.contiguous(memory_format=torch.channels_last)

    def eval_batch():
        with torch.no_grad():
            eval_net(xx)

    variants = {
        "data/albumentations": data_albu,
        "data/batched": data_batched,
        "step/eager": stepper(copy.deepcopy(model.net), torch.contiguous_format),
        "step/channels_last": stepper(channels_last(), torch.channels_last),
        "step/no_dropout": stepper(channels_last(without_dropout=True), torch.channels_last),
        "step/bf16": stepper(channels_last(), torch.channels_last, dtype=torch.bfloat16),
        "eval/batch": eval_batch,
    }
    compile_s = None
    if args.compile:
        net = channels_last()
        step = stepper(net, torch.channels_last, torch.compile(net))
        t = time.perf_counter()
        step(), step()
        compile_s = time.perf_counter() - t
        variants["step/compile"] = step
    for fn in variants.values():  # warm-up
        fn()
    times = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    steps = n_train / bs
    result = {
        "config": " ".join(args.config), "batch_size": bs, "threads": torch.get_num_threads(), "rounds": args.rounds,
        "compile_s": compile_s,
        "per_batch_ms": {k: 1000 * statistics.median(v) for k, v in times.items()},
        "epoch_s_implied": {k: steps * statistics.median(v) for k, v in times.items()},
    }
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
