"""Hyper-parameter search with Optuna: the search space file, the study in an RDB storage, one trial = one run.

A space file maps dotted config keys to distributions::

    optimizer.lr: {log: [1.0e-4, 1.0e-2]}
    loss.neg_pos_ratio: {int: [2, 5]}
    anchors.auto: {choice: [true, false]}

Trials are sampled by TPE (Bergstra et al., "Algorithms for Hyper-Parameter Optimization", NeurIPS 2011)
and pruned by the median rule on val mAP after each evaluation, through optuna-integration's
PyTorchLightningPruningCallback. The study lives in an Optuna RDB storage: SQLite on one machine, or
PostgreSQL/MySQL that workers on many machines join with the same command. Prints nothing.
"""

from __future__ import annotations

import json
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from multibox.config import Config, load_config, save_config
from multibox.errors import MultiboxError
from multibox.outputs import atomic_write

SPACE_ATTR = "multibox.space"
MONITOR = "val/map"
_FORMS = ("log", "int", "float", "choice")
_SCALARS = (type(None), bool, int, float, str)


@dataclass(frozen=True)
class Dimension:
    """One searched key: its form (log, int, float, choice) and its range or choices."""

    key: str
    form: str
    values: tuple[Any, ...]

    @property
    def encoded(self) -> bool:
        """Choices Optuna cannot store as they are (lists, mappings) travel as JSON text."""
        return self.form == "choice" and not all(isinstance(v, _SCALARS) for v in self.values)

    def distribution(self) -> Any:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.form == "choice":
            return CategoricalDistribution([json.dumps(v) for v in self.values] if self.encoded else list(self.values))
        low, high = self.values
        if self.form == "int":
            return IntDistribution(int(low), int(high))
        return FloatDistribution(float(low), float(high), log=self.form == "log")

    def decode(self, value: Any) -> Any:
        return json.loads(value) if self.encoded else value


def config_key_exists(key: str) -> bool:
    """Whether a dotted key names a field of the config schema (through nested sections, also optional ones)."""
    model: Any = Config
    for part in key.split("."):
        fields = getattr(model, "model_fields", None) if isinstance(model, type) else None
        if fields is None or part not in fields:
            return False
        annotation = fields[part].annotation
        options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
        model = next((o for o in options if isinstance(o, type) and issubclass(o, BaseModel)), None)
    return True


def _dimension(source: str, key: str, spec: Any) -> Dimension:
    where = f"{source}: {key}"
    if not config_key_exists(key):
        raise MultiboxError(f"{where}: unknown config key")
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in _FORMS:
        raise MultiboxError(
            f"{where}: expected one of {{log: [low, high]}}, {{int: [low, high]}}, {{float: [low, high]}}, "
            f"{{choice: [a, b, ...]}}, got {spec!r}"
        )
    form, values = next(iter(spec.items()))
    if form == "choice":
        if not isinstance(values, list) or not values:
            raise MultiboxError(f"{where}: choice needs a non-empty list, got {values!r}")
        return Dimension(key, form, tuple(values))
    numeric = (int,) if form == "int" else (int, float)
    if (
        not isinstance(values, list)
        or len(values) != 2
        or not all(isinstance(v, numeric) and not isinstance(v, bool) for v in values)
    ):
        kind = "integers" if form == "int" else "numbers"
        raise MultiboxError(f"{where}: {form} needs [low, high] as two {kind}, got {values!r}")
    low, high = values
    if low >= high:
        raise MultiboxError(f"{where}: low {low} must be below high {high}")
    if form == "log" and low <= 0:
        raise MultiboxError(f"{where}: log needs a positive low, got {low}")
    return Dimension(key, form, (low, high))


def override(key: str, value: Any) -> str:
    """KEY=VALUE as `apply_overrides` reads it back (JSON is YAML: numbers, true/false, null, lists)."""
    return f"{key}={json.dumps(value)}"


def load_space(path: Path, config_path: Path | None, overrides: list[str]) -> list[Dimension]:
    """Read and check a space file: known keys, valid forms, low < high, and every bound or choice accepted
    by the config schema (so a bad value fails now, not as a crashed trial an hour in)."""
    path = Path(path)
    if not path.is_file():
        raise MultiboxError(f"{path}: space file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise MultiboxError(f"{path}: cannot parse: {str(error).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not raw:
        raise MultiboxError(
            f"{path}: expected a mapping of config keys to distributions, e.g. optimizer.lr: {{log: [1e-4, 1e-2]}}"
        )
    space = [_dimension(str(path), str(key), spec) for key, spec in raw.items()]
    for dim in space:
        for value in dim.values:
            try:
                load_config(config_path, [*overrides, override(dim.key, value)])
            except MultiboxError as error:
                detail = str(error).split(": ", 2)[-1]
                raise MultiboxError(f"{path}: {dim.key}: {value!r} is not accepted: {detail}") from None
    return space


def space_signature(space: list[Dimension]) -> str:
    """The space as canonical JSON: what a study remembers, so a worker with another space cannot join it."""
    return json.dumps({d.key: {d.form: list(d.values)} for d in space}, sort_keys=True)


def default_storage(out: Path) -> str:
    return f"sqlite:///{(Path(out) / 'study.db').resolve()}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]


def open_storage(url: str) -> Any:
    """An Optuna RDB storage with heartbeats (a killed worker's trial is marked failed, not left running)."""
    import warnings

    from optuna.storages import RDBStorage

    sqlite = url.startswith("sqlite")
    engine_kwargs = {"connect_args": {"timeout": 120}} if sqlite else {"pool_pre_ping": True}
    error: Exception | None = None
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning: heartbeat_interval
                return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=30, grace_period=120)
        except Exception as caught:  # bad URL, missing driver, unreachable server, unwritable file
            error = caught
            # Workers that start together on a new SQLite file race to create its tables (a UNIQUE constraint
            # or "locked" error for the loser); the tables exist on the next try.
            if not sqlite or "unable to open" in str(caught):
                break
            time.sleep(0.5 + attempt)
    raise MultiboxError(f"--storage: cannot open {mask_password(url)} ({_first_line(error or RuntimeError())})")


def mask_password(url: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:***@host/db (reports and messages)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, at, host = rest.rpartition("@")
    user, colon, _ = credentials.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"


def open_study(storage: Any, name: str, space: list[Dimension], startup_trials: int = 5) -> Any:
    """Create or join a study; one whose stored space differs from `space` is refused."""
    import optuna

    sampler = optuna.samplers.TPESampler(n_startup_trials=startup_trials)
    # Median rule: after its second evaluation a trial stops when its val mAP is below the median of earlier
    # trials at the same epoch; the first 3 finished trials are never pruned (they set the median).
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, pruner=pruner, direction="maximize", load_if_exists=True
    )
    signature = space_signature(space)
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored is None:
        study.set_user_attr(SPACE_ATTR, signature)
    elif stored != signature:
        theirs = sorted(json.loads(stored)) if stored.startswith("{") else [stored]
        raise MultiboxError(
            f"--study {name}: exists with a different space (keys {', '.join(theirs)}); "
            "use the same space file or another --study"
        )
    return study


def trial_dir(out: Path, number: int) -> Path:
    return Path(out) / f"trial_{number:03d}"


def _prune_reason(trial: Any) -> str:
    values = trial.storage.get_trial(trial._trial_id).intermediate_values
    if not values:
        return "pruned"
    epoch = max(values)
    return f"pruned at epoch {epoch}: val mAP {values[epoch]:.4f} below the median of earlier trials"


def make_objective(
    config_path: Path | None,
    overrides: list[str],
    space: list[Dimension],
    out: Path,
    run: Callable[..., dict[str, Any] | None],
) -> Callable[[Any], float]:
    """The Optuna objective: sample the space, train one run in out/trial_NNN (`run` is engine.train.train),
    return its val mAP. Each trial records its output folder and, when it ends early, the reason."""
    import optuna
    from optuna_integration import PyTorchLightningPruningCallback

    def objective(trial: optuna.Trial) -> float:
        folder = trial_dir(out, trial.number)
        trial.set_user_attr("output_dir", str(folder))
        trial.set_user_attr("reason", "running (a worker that stops without a word leaves this)")
        params = {d.key: d.decode(_suggest(trial, d)) for d in space}
        try:
            config = load_config(
                config_path,
                [
                    *overrides,
                    *(override(k, v) for k, v in params.items()),
                    override("train.output_dir", str(folder)),
                    "train.progress=false",
                ],
            )
            metrics = run(config, None, [PyTorchLightningPruningCallback(trial, monitor=MONITOR)])
            if metrics is None:
                raise MultiboxError("the run has no val metrics")
        except optuna.TrialPruned:
            trial.set_user_attr("reason", _prune_reason(trial))
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("reason", "interrupted")
            raise
        except Exception as error:
            trial.set_user_attr("reason", f"failed: {type(error).__name__}: {_first_line(error)}")
            raise
        trial.set_user_attr("reason", "")
        return float(metrics["map"])

    return objective


def _suggest(trial: Any, dim: Dimension) -> Any:
    """trial.suggest_* by the dimension's form."""
    if dim.form == "choice":
        return trial.suggest_categorical(dim.key, dim.distribution().choices)
    low, high = dim.values
    if dim.form == "int":
        return trial.suggest_int(dim.key, int(low), int(high))
    return trial.suggest_float(dim.key, float(low), float(high), log=dim.form == "log")


def check_tunable(config: Config) -> None:
    """Trials are scored on val mAP: a config without a val set cannot be tuned."""
    if config.data.val is None and config.data.val_split <= 0:
        raise MultiboxError("data.val: tune scores trials by val mAP; set data.val or data.val_split")


@dataclass
class TrialRow:
    """One trial as the tables and the report show it."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    reason: str
    output_dir: str
    seconds: float | None


def trial_rows(study: Any, space: list[Dimension]) -> list[TrialRow]:
    """Every trial of the study, best first (completed by val mAP, then the rest by number)."""
    decoders = {d.key: d for d in space}
    rows = []
    for trial in study.get_trials(deepcopy=False):
        params = {k: decoders[k].decode(v) if k in decoders else v for k, v in trial.params.items()}
        reason = trial.user_attrs.get("reason", "")
        state = trial.state.name.lower()
        if state == "fail" and (not reason or reason.startswith("running")):
            reason = "interrupted: its worker stopped (no heartbeat)"
        elif state == "running":
            reason = ""
        duration = trial.duration.total_seconds() if trial.duration is not None else None
        rows.append(
            TrialRow(trial.number, state, trial.value, params, reason, trial.user_attrs.get("output_dir", ""), duration)
        )
    return sorted(rows, key=lambda r: (r.state != "complete", -(r.value or 0.0) if r.state == "complete" else r.number))


def write_best_config(
    study: Any, space: list[Dimension], config_path: Path | None, overrides: list[str], path: Path, out: Path
) -> Config:
    """The base config with the best trial's values, resolved (absolute data paths), writing into out/best."""
    decoders = {d.key: d for d in space}
    best = study.best_trial
    values = [override(k, decoders[k].decode(v) if k in decoders else v) for k, v in best.params.items()]
    config = load_config(
        config_path, [*overrides, *values, override("train.output_dir", str(Path(out).resolve() / "best"))]
    )
    temporary = path.with_name(f".{path.name}.tmp")
    save_config(config, temporary)
    temporary.replace(path)
    return config


def _save_figure(figure: Any, path: Path) -> None:
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=110, bbox_inches="tight"))


def write_plots(study: Any, out: Path) -> dict[str, str]:
    """Optuna's optimisation history and parameter importances (matplotlib backend) as PNGs; for each
    plot that cannot be drawn yet (too few completed trials), the reason instead of a file name."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    made: dict[str, str] = {}
    plots: dict[str, Callable[..., Any]] = {
        "optimization_history.png": optuna_plots.plot_optimization_history,
        "param_importances.png": optuna_plots.plot_param_importances,
    }
    for name, plot in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning of the matplotlib backend
            try:
                axes = plot(study)
                figure = axes.figure if hasattr(axes, "figure") else axes[0].figure
                _save_figure(figure, Path(out) / name)
                made[name] = name
            except Exception as error:  # e.g. importances need 2+ completed trials with different values
                made[name] = f"not drawn: {_first_line(error)}"
            finally:
                plt.close("all")
    return made


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def write_report(
    study: Any, rows: list[TrialRow], plots: dict[str, str], storage_url: str, path: Path, baseline: float | None = None
) -> None:
    """tune_report.md: counts, the best trial, every trial with its reason, and the two plots."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    keys = list(dict.fromkeys(k for row in rows for k in row.params))
    lines = [
        f"# Tuning report: study `{study.study_name}`",
        "",
        f"- storage: `{mask_password(storage_url)}`",
        "- trials: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())),
        "- objective: val mAP@[.5:.95] (COCO) of each trial's best checkpoint; TPE sampler, median pruner",
    ]
    complete = [r for r in rows if r.state == "complete"]
    if complete:
        best = complete[0]
        lines.append(
            f"- best: trial {best.number}, val mAP {best.value:.4f}"
            + (f" (default config: {baseline:.4f})" if baseline is not None else "")
            + "; its config: `best_config.yaml`"
        )
    lines += [
        "",
        "| trial | state | val mAP | " + " | ".join(f"`{k}`" for k in keys) + " | seconds | note |",
        "|---|---|---|" + "---|" * len(keys) + "---|---|",
    ]
    for row in rows:
        value = "" if row.value is None else f"{row.value:.4f}"
        seconds = "" if row.seconds is None else f"{row.seconds:.0f}"
        cells = [_cell(row.params.get(k, "")) for k in keys]
        lines.append(
            f"| {row.number} | {row.state} | {value} | " + " | ".join(cells) + f" | {seconds} | {_cell(row.reason)} |"
        )
    for title, name in (
        ("Optimisation history", "optimization_history.png"),
        ("Parameter importances", "param_importances.png"),
    ):
        made = plots.get(name, "not drawn")
        lines += ["", f"## {title}", "", f"![{title}]({name})" if made == name else f"({made})"]
    text = ("\n".join(lines) + "\n").encode()
    atomic_write(path, lambda file: file.write(text))
