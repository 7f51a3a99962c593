"""Tiny synthetic data sets written in the real on-disk formats (never ../shared)."""

from __future__ import annotations

import json
import logging
import re
import os
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def _pattern_images(n: int, size: int, channels: int, labels: np.ndarray, seed: int) -> np.ndarray:
    """Class-dependent images a tiny net can learn: a bright square whose place encodes the label."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, size=(n, size, size, channels), dtype=np.uint8)
    cells = 4
    step = size // cells
    for i, y in enumerate(labels):
        r, c = divmod(int(y) % (cells * cells), cells)
        x[i, r * step : (r + 1) * step, c * step : (c + 1) * step, :] = 230
    return x


def write_mnist(root: Path, n_train: int = 256, n_test: int = 128, seed: int = 0) -> Path:
    """MNIST in torchvision's raw IDX layout: <root>/MNIST/raw/*-ubyte."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = _pattern_images(n, 28, 1, labels, seed + n)[..., 0]
        with open(raw / f"{prefix}-images-idx3-ubyte", "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        with open(raw / f"{prefix}-labels-idx1-ubyte", "wb") as f:
            f.write(struct.pack(">II", 2049, n) + labels.tobytes())
    return root


def write_folder(root: Path, classes=("cat", "dog", "frog"), per_class=(12, 6), size=32, channels=3, seed=0) -> Path:
    """An ImageFolder tree <root>/{train,test}/<class>/NNNN.png."""
    for split, n in zip(("train", "test"), per_class):
        for idx, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            labels = np.full(n, idx)
            imgs = _pattern_images(n, size, channels, labels, seed + idx + (100 if split == "test" else 0))
            for j, img in enumerate(imgs):
                Image.fromarray(img[..., 0] if channels == 1 else img).save(d / f"{j:04d}.png")
    return root


def write_cifar_jpeg(root: Path, per_class=(8, 4)) -> Path:
    """A CIFAR-10-like JPEG export: <root>/cifar10-jpeg/{train,test}/<10 classes>/*.jpg."""
    from eva_lightning.data.datasets import CIFAR10

    tree = root / "cifar10-jpeg"
    for split, n in zip(("train", "test"), per_class):
        for idx, cls in enumerate(CIFAR10.classes):
            d = tree / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for j, img in enumerate(_pattern_images(n, 32, 3, np.full(n, idx), idx + (50 if split == "test" else 0))):
                Image.fromarray(img).save(d / f"{j:04d}.jpg", quality=90)
    return root


def tar_tree(tree: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname=tree.name)
    return archive


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    return write_mnist(tmp_path / "data")


@pytest.fixture
def lightning_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """``caplog`` that also sees Lightning's console lines (``eva`` stops them at the ``lightning`` logger)."""
    logger = logging.getLogger("lightning")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)


@pytest.fixture
def folder_dir(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "folder")


def eva_env(extra: dict | None = None) -> dict:
    """Environment of a test subprocess: the project and the tests folder importable (tiny nets),
    no EVA_DATA_DIR from the caller's shell (tests make their own data) unless ``extra`` sets one."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{TESTS}"}
    env.pop("EVA_DATA_DIR", None)
    return {**env, **(extra or {})}


def run_eva(*args: str, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m eva_lightning ARGS`` in a subprocess with :func:`eva_env`."""
    return subprocess.run(
        [sys.executable, "-m", "eva_lightning", *args],
        cwd=cwd, env=eva_env(env), capture_output=True, text=True, timeout=timeout,
    )


# runs each argv through main() and records (exit code, stderr, traceback?) as JSON
MAIN_CASES = r"""
import contextlib, io, json, logging, sys, traceback
logging.basicConfig(level=logging.INFO, stream=sys.__stderr__)
from eva_lightning.entry import main
cases, out = json.loads(open(sys.argv[1]).read()), {}
for name, argv in cases.items():
    err = io.StringIO()
    code, tb = 0, None
    with contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            code, tb = 1, traceback.format_exc()
    out[name] = {"code": code, "stderr": err.getvalue(), "traceback": tb}
open(sys.argv[2], "w").write(json.dumps(out))
"""


def start_main_cases(cases: dict[str, list[str]], cwd: Path, tag: str, env: dict | None = None):
    """Start one subprocess that runs each argv through ``eva_lightning.entry.main`` in ``cwd`` (an
    ``eva`` start costs seconds of imports on a small CPU); its case and result files go beside ``cwd``."""
    spec, out = cwd.parent / f"{tag}.json", cwd.parent / f"{tag}.out.json"
    spec.write_text(json.dumps(cases))
    proc = subprocess.Popen([sys.executable, "-c", MAIN_CASES, str(spec), str(out)], cwd=cwd, env=env or eva_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, out


def finish_main_cases(proc: subprocess.Popen, out: Path) -> dict:
    """Each case's ``{"code", "stderr", "traceback"}`` once the subprocess of :func:`start_main_cases` ends."""
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0 and out.exists(), err[-3000:]
    return json.loads(out.read_text())


TINY_CONFIG = """\
seed_everything: 1
trainer:
  max_epochs: 1
  accelerator: cpu
  devices: 1
  log_every_n_steps: 1
  enable_progress_bar: false
model:
  class_path: tiny.TinyNet
  init_args:
    optimizer:
      class_path: torch.optim.SGD
      init_args: {{lr: 0.05, momentum: 0.9}}
data:
  dataset: mnist
  data_dir: {data_dir}
  download: false
  batch_size: 32
"""


@pytest.fixture
def tiny_config(tmp_path: Path, mnist_dir: Path) -> Path:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_CONFIG.format(data_dir=mnist_dir))
    return cfg


def logged(run: Path, tag: str | None = None) -> dict:
    """A run's scalars as eva reads them (:class:`~eva_lightning.runs.result.RunResult`; a resumed run's repeated
    steps: the later wins, as TensorBoard purges them): ``{step: value}`` of ``tag``, else ``{tag: {step: value}}``.
    Tests of the code that reads runs (compare, report, the curves figure) keep an EventAccumulator as their oracle."""
    from eva_lightning.runs.result import RunResult

    result = RunResult(run)
    return dict(result.points(tag)) if tag else {t: dict(result.points(t)) for t in result.scalars}


# --------------------------------------------------------------------------- configs/ as eva reads them
def config_chain(config: Path) -> list[Path]:
    """The config files the header's ``eva fit --config ...`` command composes, in order (else just ``config``)."""
    for line in config.read_text().splitlines():
        if not line.startswith("#"):
            break
        if "eva fit" in line:
            command = re.search(r"eva fit((?:\s+--config\s+\S+)+)", line)
            chain = [ROOT / p for p in re.findall(r"--config\s+(\S+)", command.group(1))] if command else []
            if config in chain:
                return chain
    return [config]


def included(config: Path) -> list[Path]:
    """Files a config includes through its top-level ``config:`` key (jsonargparse merges them first)."""
    names = (yaml.safe_load(config.read_text()) or {}).get("config") or []
    return [(config.parent / n).resolve() for n in ([names] if isinstance(names, str) else names)]


def files_read(config: Path) -> list[Path]:
    """Every file the composed config reads, in merge order (includes first)."""
    return [f for p in config_chain(config) for f in (*included(p), p)]


def merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``, nested dicts merged key by key (for :func:`expand`)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def expand(cfg: dict) -> dict:
    """The keys one file sets itself, dotted ones (``data.train_transforms``) nested, without its ``config:``
    include (what a composition step changes; :func:`read_config` is the composed config)."""
    out: dict = {}
    for key, value in cfg.items():
        if key != "config":
            for part in reversed(key.split(".")):
                value = {part: value}
            out = merge(out, value)
    return out


def read_config(config: Path) -> dict:
    """The config as ``eva fit`` composes it (the header's ``--config`` chain, ``config:`` includes, dotted keys),
    composed by the CLI itself (jsonargparse, ``defaults=False``: what the files say, no defaults), as plain YAML."""
    from eva_lightning.cli import ParsedOnly

    cli = ParsedOnly(config_args(config), defaults=False)
    cfg = yaml.safe_load(cli.parser.dump(cli.config, skip_validation=True))
    cfg.pop("config", None)
    return cfg


def runs_itself(config: Path) -> bool:
    """Its header's ``eva fit`` command ends with it (``s5_small.yaml``, which ``s4.yaml`` includes): a run too."""
    header = [line for line in config.read_text().splitlines()[:3] if line.startswith("#")]
    return any(re.search(rf"eva fit(?:\s+--config\s+\S+)*\s+--config\s+configs/{re.escape(config.name)}(\s|$)", line)
               for line in header)


def composition_parts() -> set[Path]:
    """Files that another config's command puts in front of it, or includes: parts of a run, not runs
    (unless the file's own header trains it)."""
    configs = list((ROOT / "configs").glob("*.yaml"))
    chained = {p for c in configs for p in config_chain(c)[:-1] if config_chain(c)[-1] == c}
    return {p for p in chained | {p for c in configs for p in included(c)} if not runs_itself(p)}


PARTS = composition_parts()
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if p not in PARTS)


def config_args(config: Path) -> list[str]:
    return [arg for path in config_chain(config) for arg in ("--config", str(path))]


def as_param(config: Path):
    """``config`` as a test parameter named by its stem."""
    return pytest.param(config, id=config.stem)


#: configs/cifar10_fast.yaml shrunk for a test: 2 epochs of 5 steps, a narrow net, a held-out split
TINY_FAST_CIFAR = ["--trainer.accelerator", "cpu", "--trainer.precision", "32-true", "--trainer.max_epochs", "2",
                   "--trainer.limit_train_batches", "5", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                   "--data.batch_size", "16", "--model.init_args.widths", "[8, 16, 16]",
                   "--model.init_args.schedule.peak_epoch", "0.5", "--data.val_split", "0.1"]


@pytest.fixture
def one_thread():
    """One intra-op thread for this test, put back after it: a later test that compares a subprocess's run with an
    in-process one bitwise (tests/core/test_resume.py) needs the process's own thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
