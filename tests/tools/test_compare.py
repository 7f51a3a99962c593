"""``eva compare``: two tiny runs → one figure and a final (best only on a held-out split) table matching the event files."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from eva_lightning.core.errors import EvaError
from eva_lightning.tools.compare import compare, main, read_run


def write_run(root: Path, name: str, acc: list[float], loss: list[float], steps_per_epoch: int = 5,
              val_split: float | None = None) -> Path:
    """Epoch metrics the way Lightning logs them: at step = global step, with an ``epoch`` scalar."""
    logger = TensorBoardLogger(save_dir=root, name=name, default_hp_metric=False)
    if val_split is not None:  # LightningCLI's config.yaml in the run folder
        Path(logger.log_dir).mkdir(parents=True, exist_ok=True)
        (Path(logger.log_dir) / "config.yaml").write_text(f"data:\n  val_split: {val_split}\n")
    for epoch, (a, l) in enumerate(zip(acc, loss)):
        step = (epoch + 1) * steps_per_epoch - 1
        logger.log_metrics({"val/acc": a, "val/loss": l, "epoch": epoch}, step=step)
        logger.log_metrics({"train/loss_step": l + 0.1, "epoch": epoch}, step=step - 2)
    logger.finalize("success")
    return root / name


def test_compare_two_runs(tmp_path, capsys):
    a = write_run(tmp_path, "bn", acc=[0.5, 0.8, 0.7], loss=[1.0, 0.4, 0.6])
    b = write_run(tmp_path, "gbn", acc=[0.6, 0.65, 0.9], loss=[0.9, 0.8, 0.3])
    out = tmp_path / "fig" / "compare.png"
    results = compare([a, b], ["val/loss", "val/acc"], out)
    with Image.open(out) as im:
        assert im.size[0] > 2 * im.size[1] / 1.5  # two panels side by side
    by = {(r.run, r.metric): r for r in results}
    # final values equal what the event files hold; validation was the test split: no best
    for run_dir, name in ((a, "bn/version_0"), (b, "gbn/version_0")):
        events = next((run_dir / "version_0").glob("events.out.tfevents.*"))
        acc = EventAccumulator(str(events))
        acc.Reload()
        values = {tag: [e.value for e in acc.Scalars(tag)] for tag in ("val/acc", "val/loss")}
        assert by[(name, "val/acc")].final == pytest.approx(values["val/acc"][-1])
        assert by[(name, "val/loss")].final == pytest.approx(values["val/loss"][-1])
        assert by[(name, "val/acc")].best is None and by[(name, "val/loss")].best is None

    main([str(a), str(b), "--metrics", "val/acc", "--out", str(tmp_path / "acc.png")])
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "| run | metric | final | at epoch |"
    assert "| bn/version_0 | val/acc | 0.7000 | 2 |" in out
    assert "| gbn/version_0 | val/acc | 0.9000 | 2 |" in out
    assert "best" not in out.split("val/* of")[0].lower()  # the table; the note below says why
    assert "val/* of bn/version_0, gbn/version_0: the test split" in out
    assert (tmp_path / "acc.png").stat().st_size > 0


def test_best_only_for_validation_of_a_held_out_split(tmp_path, capsys):
    held = write_run(tmp_path, "s10", acc=[0.5, 0.8, 0.7], loss=[1.0, 0.4, 0.6], val_split=0.1)
    on_test = write_run(tmp_path, "s9", acc=[0.6, 0.65, 0.9], loss=[0.9, 0.8, 0.3], val_split=0)
    by = {(r.run, r.metric): r for r in compare([held, on_test], ["val/acc", "val/loss"], tmp_path / "c.png")}
    assert (by[("s10/version_0", "val/acc")].best, by[("s10/version_0", "val/acc")].best_epoch) == (pytest.approx(0.8), 1)
    assert (by[("s10/version_0", "val/loss")].best, by[("s10/version_0", "val/loss")].best_epoch) == (pytest.approx(0.4), 1)
    assert by[("s9/version_0", "val/acc")].best is None

    main([str(held), str(on_test), "--metrics", "val/acc", "--out", str(tmp_path / "acc.png")])
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "| run | metric | final | at epoch | best (held-out val) | at epoch |"
    assert "| s10/version_0 | val/acc | 0.7000 | 2 | 0.8000 | 1 |" in out
    assert "| s9/version_0 | val/acc | 0.9000 | 2 | – | – |" in out


def test_newest_version_and_errors(tmp_path):
    write_run(tmp_path, "run", acc=[0.1], loss=[2.0])
    write_run(tmp_path, "run", acc=[0.2, 0.3], loss=[1.5, 1.0])
    run = read_run(tmp_path / "run")
    assert run.name == "run/version_1"
    assert run.scalars["val/acc"] == [(0, pytest.approx(0.2)), (1, pytest.approx(0.3))]  # x is the epoch
    with pytest.raises(EvaError, match="logged tags"):
        compare([tmp_path / "run"], ["val/nope"], tmp_path / "x.png")
    with pytest.raises(EvaError, match="no TensorBoard event files"):
        read_run(tmp_path)


def test_a_folder_of_seed_runs_is_one_mean_curve_with_its_spread(tmp_path, capsys, monkeypatch):
    """``eva seeds`` folders (seed_1, seed_2, ...): per-epoch mean ± sample sd, final as mean ± sd."""
    import statistics

    for seed, (acc, loss) in enumerate([([0.5, 0.8, 0.90], [1.0, 0.4, 0.30]), ([0.6, 0.7, 0.94], [0.9, 0.5, 0.20])], 1):
        logger = TensorBoardLogger(save_dir=tmp_path, name="s6_gbn", version=f"seed_{seed}", default_hp_metric=False)
        for epoch, (a, l) in enumerate(zip(acc, loss)):
            logger.log_metrics({"val/acc": a, "val/loss": l, "epoch": epoch}, step=(epoch + 1) * 5 - 1)
        logger.finalize("success")
    single = write_run(tmp_path, "bn", acc=[0.5, 0.8, 0.7], loss=[1.0, 0.4, 0.6])
    run = read_run(tmp_path / "s6_gbn")
    assert run.name == "s6_gbn (2 seeds)" and run.seeds == 2
    assert run.scalars["val/acc"] == [(0, pytest.approx(0.55)), (1, pytest.approx(0.75)), (2, pytest.approx(0.92))]
    assert run.sd["val/acc"][-1] == pytest.approx(statistics.stdev([0.90, 0.94]))

    from matplotlib.axes import Axes

    bands = []
    real_fill = Axes.fill_between
    monkeypatch.setattr(Axes, "fill_between", lambda ax, x, lo, hi, **kw: bands.append((list(x), lo, hi)) or real_fill(ax, x, lo, hi, **kw))
    (result, _) = compare([tmp_path / "s6_gbn", single], ["val/acc"], tmp_path / "banded.png")
    assert (result.final, result.final_sd, result.seeds) == (pytest.approx(0.92), pytest.approx(0.0283, abs=1e-4), 2)
    (band,) = bands  # one band, the seed folder's: mean ± sd at every epoch
    sd = statistics.stdev([0.90, 0.94])
    assert band[0] == [0, 1, 2] and band[1][-1] == pytest.approx(0.92 - sd) and band[2][-1] == pytest.approx(0.92 + sd)

    main([str(tmp_path / "s6_gbn"), str(single), "--metrics", "val/acc", "--out", str(tmp_path / "both.png")])
    out = capsys.readouterr().out
    assert "| s6_gbn (2 seeds) | val/acc | 0.9200 ± 0.0283 | 2 |" in out
    assert "| bn/version_0 | val/acc | 0.7000 | 2 |" in out
