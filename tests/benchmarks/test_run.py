"""benchmarks/run.py alternates eva fit and the plain loop as eva, plain, plain, eva and reports step-time medians."""

from __future__ import annotations

import logging
import sys

from conftest import ROOT, TINY_FAST_CIFAR, write_cifar_jpeg

sys.path.insert(0, str(ROOT / "benchmarks"))
import run  # noqa: E402


def test_run_alternates_eva_plain_plain_eva_and_times_each_step(tmp_path, monkeypatch, caplog, one_thread):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run, "keep_freed_memory", lambda: False)  # the test process keeps glibc's defaults
    caplog.set_level(logging.INFO, logger="benchmarks.run")
    result = run.main(["--config", str(ROOT / "configs" / "cifar10_fast.yaml"), "--repeats", "2", "--",
                       "--data.data_dir", str(write_cifar_jpeg(tmp_path)), *TINY_FAST_CIFAR])
    order = [m.split("#")[0].strip() for m in caplog.messages if m.startswith(("eva ", "plain #"))]
    assert order == ["eva", "plain", "plain", "eva"]
    for side in ("eva_runs", "plain_runs"):
        for r in result[side]:  # 5 steps an epoch: 4 periods between their starts, per epoch
            assert [len(epoch) for epoch in r["step_s"]] == [4, 4] and all(t > 0 for e in r["step_s"] for t in e)
    steps = result["ratio_eva_over_plain"]["step_median"]
    assert steps == result["eva"]["step_s_median"] / result["plain"]["step_s_median"] and steps > 0
