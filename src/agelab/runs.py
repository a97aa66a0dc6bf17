"""Run folders: ``runs/NNNNN-<dataset>-<tag>/`` with config, metrics and status.

:class:`Run` is how every command reads a run folder (resolve a run or checkpoint path,
its validated config, status, summary, metrics); the functions below write them.

Folder numbers are claimed with ``mkdir``, which is atomic: two processes that
start at the same moment never get the same folder. Where ``fcntl`` exists, the
listing and the ``mkdir`` also run under an exclusive lock on ``<out_dir>/.lock``,
so two runs with different datasets or tags never share a number either.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agelab.checkpoint import CheckpointError
from agelab.config import TrainConfig
from agelab.errors import first_line

try:
    import fcntl
except ImportError:  # Windows: mkdir alone still keeps folders apart
    fcntl = None

_RUN_RE = re.compile(r"^(\d{5,})-")


@contextmanager
def _locked(parent: Path):
    """Exclusive lock on ``parent/.lock`` (between processes and threads; released by the kernel on a kill)."""
    fd = None
    if fcntl is not None:
        try:
            fd = os.open(parent / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without flock, a read-only folder: mkdir alone decides
            if fd is not None:
                os.close(fd)
            fd = None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing releases the lock


def create_run_dir(out_dir: str | os.PathLike, dataset: str, tag: str) -> Path:
    parent = Path(out_dir)
    parent.mkdir(parents=True, exist_ok=True)
    with _locked(parent):
        for _ in range(1000):
            taken = [int(m.group(1)) for p in parent.iterdir() if (m := _RUN_RE.match(p.name))]
            run = parent / f"{max(taken, default=-1) + 1:05d}-{dataset}-{tag}"
            try:
                run.mkdir()
            except FileExistsError:  # another process claimed this number first (no fcntl)
                continue
            return run
    raise OSError(f"could not claim a run folder in {parent}")


def write_status(run_dir: Path, state: str, **extra) -> None:
    """``status.json``: 'running', 'finished', 'interrupted' or 'failed' (with the error)."""
    data = {"state": state, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}
    tmp = run_dir / ".status.json.tmp"
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, run_dir / "status.json")


def read_status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl`` and mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"))
            except ImportError:  # tensorboard is optional at runtime
                self.tb = None

    def truncate_after(self, step: int) -> None:
        """On resume, drop lines written after the checkpoint we resume from."""
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line torn by a kill mid-write
                continue
            if isinstance(record, dict) and isinstance(record.get("step", 0), int) and record.get("step", 0) <= step:
                keep.append(line)
        tmp = self.path.with_name(f".{self.path.name}.tmp")  # atomic: a kill now must not lose the log
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, self.path)

    def write(self, step: int, values: dict) -> None:
        record = {"step": step, **values}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(run_dir: Path, events: bool = False) -> list[dict]:
    """The metric records of ``metrics.jsonl``; with ``events``, also event lines (e.g. ``"event": "rollback"``)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a torn line from a killed process
            continue
        if isinstance(record, dict) and (events or "event" not in record):
            records.append(record)
    return records


def _fits_field(value, default) -> bool:
    """Whether a value read from JSON has the type of a TrainConfig field with this default."""
    if default is None:  # optional strings (data_root)
        return value is None or isinstance(value, str)
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(value, bool):  # JSON true/false where a number belongs
        return False
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


@dataclass(frozen=True)
class Run:
    """A run folder (the one holding ``config.json``), read the same way by every command.

    :meth:`find` / :meth:`of` resolve a run folder or a checkpoint folder inside one
    (``RUN/checkpoints/step-NNNNNNN``) to the run folder.
    """

    path: Path

    @classmethod
    def find(cls, path: str | os.PathLike) -> "Run | None":
        """The run that holds ``path`` (a run folder or a checkpoint folder inside one), or None."""
        path = Path(path)
        for candidate in (path, path.parent.parent):
            if (candidate / "config.json").is_file():
                return cls(candidate)
        return None

    @classmethod
    def of(cls, path: str | os.PathLike) -> "Run":
        """As :meth:`find`, but a path outside any run is a CheckpointError that says so."""
        run = cls.find(path)
        if run is None:
            raise CheckpointError(f"{path}: not a run folder (no config.json) nor a checkpoint folder inside one")
        return run

    def config(self) -> TrainConfig:
        """The validated ``config.json``; a damaged or hand-broken one is a CheckpointError naming the file."""
        where = self.path / "config.json"
        try:
            cfg = TrainConfig.from_dict(json.loads(where.read_text()))
            for f in dataclasses.fields(cfg):  # JSON edited by hand: a string or a float where an int belongs
                value = getattr(cfg, f.name)
                if not _fits_field(value, f.default):
                    kind = type(f.default) if f.default is not None else str
                    raise TypeError(f"{f.name} = {value!r} is not of type {kind.__name__}")
            return cfg.validate()
        except (ValueError, TypeError, AttributeError) as exc:  # bad JSON or values (ConfigError is a ValueError)
            raise CheckpointError(f"{where}: not a valid run config ({first_line(exc)})") from None

    def status(self) -> dict:
        """``status.json`` ({} when missing or torn)."""
        return read_status(self.path)

    def summary(self) -> dict:
        """``summary.json``, written when training ends ({} before that or when unreadable)."""
        try:
            data = json.loads((self.path / "summary.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def metrics(self, events: bool = False) -> list[dict]:
        """The records of ``metrics.jsonl`` (see :func:`read_metrics`)."""
        return read_metrics(self.path, events=events)
