"""Training configuration: what may be trained, validated before any data is read.

The config arrives from a DAG trigger form, so it names a model only among the classes the
deployment allows (``ml/models/classes.py``), never an import path of its choosing; the model is
constructed from its params here, so a wrong parameter is refused before the snapshot is read.
``{"model": "sklearn", "estimator": ...}`` (or ``estimator`` alone, as before the model
interface) picks one of the eight scikit-learn estimators.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from typing import Any

from ml.models.classes import BUILTINS, ModelClassError, import_class, qualified
from ml.models.sklearn_tabular import ESTIMATORS

__all__ = ["ESTIMATORS", "ConfigError", "TrainingConfig", "parse_config"]
DEFAULT_MODEL = "sklearn"


class ConfigError(ValueError):
    """The training config is invalid; the message says what to change."""


@dataclass(frozen=True)
class TrainingConfig:
    target: str
    model: str = DEFAULT_MODEL  # a name the deployment allows
    estimator: str | None = None  # the sklearn model's estimator
    params: dict[str, Any] = field(default_factory=dict)
    features: tuple[str, ...] | None = None  # None: every column but the target (and `exclude`)
    exclude: tuple[str, ...] = ()
    test_fraction: float = 0.2
    seed: int = 42
    predict_timeout_seconds: float = 10.0  # a model slower than this on a request-sized batch is refused

    @property
    def model_class(self) -> str:
        return qualified(self.model)

    @property
    def label(self) -> str:
        """What the registry and the models page call it: the estimator, or the model's name."""
        return self.estimator if self.model_class == BUILTINS["sklearn"] else self.model

    def model_params(self) -> dict[str, Any]:
        if self.model_class == BUILTINS["sklearn"]:  # the estimator's params, and the model's own cap
            params = dict(self.params)
            cap = {"max_categories": params.pop("max_categories")} if "max_categories" in params else {}
            return {"estimator": self.estimator or "HistGradientBoostingClassifier", "params": params, **cap}
        return dict(self.params)

    def build(self):
        """A new, unfitted model; the config's seed goes to a ``seed`` parameter when it has one."""
        cls = import_class(self.model_class)
        params = self.model_params()
        try:
            accepts_seed = "seed" in inspect.signature(cls).parameters
        except (TypeError, ValueError):  # pragma: no cover - a class without a signature
            accepts_seed = False
        if accepts_seed and "seed" not in params:
            params["seed"] = self.seed
        try:
            return cls(**params)
        except (TypeError, ValueError) as exc:
            valid = [p for p in inspect.signature(cls).parameters if p != "self"]
            raise ConfigError(f"model {self.model!r}: {exc}; its params are {valid}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_class": self.model_class,
            "estimator": self.estimator,
            "target": self.target,
            "params": self.params,
            "features": list(self.features) if self.features is not None else None,
            "exclude": list(self.exclude),
            "test_fraction": self.test_fraction,
            "seed": self.seed,
            "predict_timeout_seconds": self.predict_timeout_seconds,
        }


_KEYS = {"model", "model_class", "estimator", "target", "params", "features", "exclude", "test_fraction", "seed",
         "predict_timeout_seconds"}


def parse_config(raw: str | dict[str, Any]) -> TrainingConfig:
    """Validate a JSON string or dict into a TrainingConfig, or raise ConfigError."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--config is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config must be a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}; allowed keys are {sorted(_KEYS)}")
    if not isinstance(raw.get("target"), str) or not raw["target"]:
        raise ConfigError("config needs 'target' as a non-empty string")
    model = raw.get("model") or DEFAULT_MODEL
    if not isinstance(model, str):
        raise ConfigError(f"config 'model' must be a model name, got {model!r}")
    try:
        model_class = qualified(model)
    except ModelClassError as exc:
        raise ConfigError(str(exc)) from None
    if raw.get("model_class") not in (None, model_class):
        raise ConfigError(f"config 'model_class' {raw['model_class']!r} is not the class of model {model!r} "
                          f"({model_class}); leave it out")
    estimator = raw.get("estimator")
    if model_class == BUILTINS["sklearn"]:
        estimator = estimator or "HistGradientBoostingClassifier"
        if estimator not in ESTIMATORS:
            raise ConfigError(f"estimator {estimator!r} is not allowed; choose one of {sorted(ESTIMATORS)}")
    elif estimator:
        raise ConfigError(f"config 'estimator' applies to the sklearn model only; model {model!r} takes its "
                          f"settings in 'params'")
    params = raw.get("params") or {}
    if not isinstance(params, dict):
        raise ConfigError("config 'params' must be a JSON object of model parameters")
    features = raw.get("features")
    if features is not None and (not isinstance(features, list) or not all(isinstance(c, str) for c in features)):
        raise ConfigError("config 'features' must be a list of column names, or null for all but the target")
    if features is not None and not features:
        raise ConfigError("config 'features' is an empty list; give column names or null for all but the target")
    exclude = raw.get("exclude") or []
    if not isinstance(exclude, list) or not all(isinstance(c, str) for c in exclude):
        raise ConfigError("config 'exclude' must be a list of column names")
    test_fraction = raw.get("test_fraction", 0.2)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ConfigError(f"config 'test_fraction' must be a number strictly between 0 and 1, got {test_fraction!r}")
    seed = raw.get("seed", 42)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"config 'seed' must be an integer, got {seed!r}")
    timeout = raw.get("predict_timeout_seconds", 10.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ConfigError(f"config 'predict_timeout_seconds' must be a positive number, got {timeout!r}")
    config = TrainingConfig(
        target=raw["target"],
        model=model,
        estimator=estimator,
        params=params,
        features=tuple(features) if features is not None else None,
        exclude=tuple(exclude),
        test_fraction=float(test_fraction),
        seed=seed,
        predict_timeout_seconds=float(timeout),
    )
    config.build()  # parameter names and values are checked here, before data is read
    return config
