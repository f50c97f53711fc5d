"""Each tracker's way to open a run (local and offline unless told otherwise), log against tokens, and
take a table or an image.

Built on accelerate's tracker classes (``accelerate.tracking``). What they leave to the caller is
added here, tracker by tracker: where the local store is, finding a run again by name (so evaluation
logs into the run that training made), training tokens as W&B's x-axis (its ``step`` must only grow,
and evaluation logs early checkpoints after the last training step), and tables and images where the
class has no method for them.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

# Every tracker accelerate speaks to, with the package that must be importable and how to install it.
# The four with a losslens extra are the tested ones; the others go through accelerate's defaults.
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb", "trackio": "trackio",
            "comet_ml": "comet_ml", "aim": "aim", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab"}
EXTRAS = {"tensorboard", "mlflow", "wandb", "trackio"}
TOKENS = "tokens"  # the x-axis: training tokens seen (the key W&B plots against)


@dataclass(frozen=True)
class Where:
    """A tracker run: named ``run``, grouped under ``study`` (project, experiment), stored under ``study_dir``."""

    study_dir: Path
    study: str
    run: str


def install_hint(name: str) -> str:
    return f"pip install 'losslens[{name}]'" if name in EXTRAS else f"pip install {PACKAGES[name]}"


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    """A table as Markdown, which TensorBoard's text tab (and most trackers' text panels) render."""
    cell = lambda v: "–" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def read_png(path: Path):
    """An RGB image as a (height, width, 3) float array in [0, 1] (matplotlib is a dependency anyway)."""
    from matplotlib.image import imread

    return imread(path)[..., :3]


class Kind:
    """A tracker through accelerate's class for it, with the defaults: ``step`` = tokens, tables as text."""

    def __init__(self, name: str):
        self.name = name

    def build(self, where: Where):
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        cls = LOGGER_TYPE_TO_CLASS[self.name]
        if cls.requires_logging_directory:
            return cls(where.run, str(where.study_dir / self.name))
        return cls(where.run)

    def start(self, where: Where, config: Optional[dict]):
        from accelerate import PartialState

        PartialState()  # accelerate's trackers log through its logger, which needs the state (evaluate, analyze)
        tracker = self.build(where)
        tracker.start()
        try:
            if config:
                tracker.store_init_configuration(config)
        except Exception:
            with contextlib.suppress(Exception):  # the caller reports the first error, not this one
                tracker.finish()  # or MLflow's run would stay active, and the next start fail
            raise
        return tracker

    def log(self, tracker, values: dict, tokens: int) -> None:
        tracker.log(values, step=tokens)

    def log_table(self, tracker, name: str, columns: list[str], rows: list[list[Any]], tokens: int) -> None:
        tracker.log({name: markdown_table(columns, rows)}, step=tokens)

    def log_image(self, tracker, name: str, png: Path, tokens: int) -> None:
        if hasattr(tracker, "log_images"):
            tracker.log_images({name: [read_png(png)]}, step=tokens)

    def finish(self, tracker) -> None:
        tracker.finish()

    def abandon(self, tracker) -> None:
        """After the tracker failed and was closed as far as it could be: release what outlives a run."""


class TensorBoard(Kind):
    """Event files in ``STUDY/tensorboard/<run>/``: ``tensorboard --logdir STUDY/tensorboard`` shows the study."""

    def build(self, where: Where):
        from accelerate.tracking import TensorBoardTracker

        return TensorBoardTracker(where.run, str(where.study_dir / "tensorboard"))

    def log_image(self, tracker, name: str, png: Path, tokens: int) -> None:
        tracker.log_images({name: read_png(png)[None]}, step=tokens, dataformats="NHWC")
        tracker.writer.flush()


class MLflow(Kind):
    """An experiment per study, a run per losslens run, found again by its name.

    The store is ``MLFLOW_TRACKING_URI`` if set, else SQLite in ``STUDY/mlflow.db`` with artifacts in
    ``STUDY/mlartifacts`` (MLflow 3 refuses its old file store unless told ``MLFLOW_ALLOW_FILE_STORE``).
    """

    def build(self, where: Where):
        import mlflow
        from accelerate.tracking import MLflowTracker

        if not os.environ.get("MLFLOW_TRACKING_URI"):
            mlflow.set_tracking_uri(local_mlflow_uri(where.study_dir))
            # MLflow also exports it, for subprocesses; but it is this study's store, not the next one's
            # in this process (tests, several studies) nor a child's working on another study.
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        return MLflowTracker(experiment_name=where.study, logging_dir=(where.study_dir / "mlartifacts").resolve().as_uri(),
                             run_id=find_mlflow_run(where.study, where.run), run_name=where.run,
                             tags={"losslens.study": where.study})

    def log_table(self, tracker, name: str, columns: list[str], rows: list[list[Any]], tokens: int) -> None:
        import mlflow

        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([columns, *rows])
        mlflow.MlflowClient().log_text(tracker.tracker.info.run_id, buf.getvalue(), f"tables/{name}.csv")

    def log_image(self, tracker, name: str, png: Path, tokens: int) -> None:
        import mlflow

        mlflow.MlflowClient().log_artifact(tracker.tracker.info.run_id, str(png), "plots")


def local_mlflow_uri(study_dir: Path) -> str:
    return f"sqlite:///{(study_dir / 'mlflow.db').resolve()}"


def find_mlflow_run(study: str, run: str) -> Optional[str]:
    """The id of the MLflow run named ``run`` in experiment ``study`` (the newest), or None."""
    import mlflow

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        return None
    found = client.search_runs([experiment.experiment_id], filter_string=f"tags.`mlflow.runName` = '{run}'",
                               order_by=["attributes.start_time DESC"], max_results=1)
    return found[0].info.run_id if found else None


class WandB(Kind):
    """A project per study, a run per losslens run with an id made from the study folder and the run's
    name (so evaluation resumes it), plotted against ``tokens``. Offline (``STUDY/wandb/``, for
    ``wandb sync``) unless ``WANDB_MODE`` says otherwise or ``WANDB_API_KEY`` is set."""

    def build(self, where: Where):
        import wandb
        from accelerate.tracking import WandBTracker

        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        return WandBTracker(where.study, name=where.run, group=where.study, id=wandb_run_id(where),
                            resume="allow", dir=str(where.study_dir), mode=mode,
                            settings=wandb.Settings(console="off", silent=True))

    def start(self, where: Where, config: Optional[dict]):
        tracker = super().start(where, config)
        tracker.run.define_metric(TOKENS)
        tracker.run.define_metric("*", step_metric=TOKENS)
        return tracker

    def log(self, tracker, values: dict, tokens: int) -> None:
        tracker.log({**values, TOKENS: tokens})

    def log_table(self, tracker, name: str, columns: list[str], rows: list[list[Any]], tokens: int) -> None:
        tracker.log_table(name, columns=columns, data=rows)

    def log_image(self, tracker, name: str, png: Path, tokens: int) -> None:
        tracker.log_images({name: [str(png)]})

    def abandon(self, tracker) -> None:
        # A W&B run that failed has usually lost its service process; without this, the process's exit
        # prints a ConnectionResetError traceback from W&B's atexit hook, and the next wandb.init in this
        # process would talk to the dead service instead of starting a new one.
        import wandb

        wandb.teardown()


def wandb_run_id(where: Where) -> str:
    folder = hashlib.sha256(str(where.study_dir.resolve()).encode()).hexdigest()[:8]
    return f"{where.run}-{folder}"[-64:]


class Trackio(Kind):
    """A project per study, a run per losslens run, resumed by name; the local store is trackio's
    (``TRACKIO_DIR``, by default under ``~/.cache/huggingface``)."""

    def build(self, where: Where):
        from accelerate.tracking import TrackioTracker

        return TrackioTracker(where.study, name=where.run, group=where.study, resume="allow")

    def log_table(self, tracker, name: str, columns: list[str], rows: list[list[Any]], tokens: int) -> None:
        import trackio

        tracker.log({name: trackio.Table(columns=columns, data=rows)}, step=tokens)

    def log_image(self, tracker, name: str, png: Path, tokens: int) -> None:
        import trackio

        tracker.log({name: trackio.Image(str(png))}, step=tokens)


KINDS: dict[str, Kind] = {k.name: k for k in (TensorBoard("tensorboard"), MLflow("mlflow"), WandB("wandb"),
                                              Trackio("trackio"))}


def kind(name: str) -> Kind:
    return KINDS.get(name) or Kind(name)
