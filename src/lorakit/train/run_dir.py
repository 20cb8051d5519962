"""The run folder: where a run writes, and how `--resume` finds its config again."""

from __future__ import annotations

import re
from pathlib import Path

from lorakit.errors import LorakitError
from lorakit.train.config import TrainConfig, read_config_file

CONFIG_FILE = "config.yaml"
RUNS_ROOT = Path("runs")


def new_run_dir(config: TrainConfig) -> Path:
    """`config.output_dir` if given (it must not hold a run yet), else a fresh `runs/<data>-<method>[-N]`."""
    if config.output_dir:
        folder = Path(config.output_dir)
        if (folder / CONFIG_FILE).exists():
            raise LorakitError(
                f"{folder} already holds a run; pass --resume {folder} to continue it, or another --output-dir"
            )
        return folder
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(config.data.rstrip("/")).stem or "data").strip("-")
    base = RUNS_ROOT / f"{stem}-{config.method}"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


def config_for_resume(run_dir: str | Path) -> TrainConfig:
    """The config a run folder was started with, to continue it (`--resume`)."""
    folder = Path(run_dir)
    file = folder / CONFIG_FILE
    if not file.is_file():
        raise LorakitError(f"{folder} is not a lorakit run folder (no {CONFIG_FILE}); pass the folder a run wrote")
    data = read_config_file(file)
    data["output_dir"] = str(folder)
    return TrainConfig.from_dict(data, source=str(file))
