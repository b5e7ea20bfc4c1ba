"""Training configuration: what may be trained, validated before any data is read.

Why an allow-list: the config arrives from a DAG trigger form, so it must not be able to
name an arbitrary import path; each entry also says which metrics apply and whether the
estimator needs scaling or imputation in front of it.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """The training config is invalid; the message says what to change."""


@dataclass(frozen=True)
class EstimatorSpec:
    import_path: str
    task: str  # "classification" | "regression"
    handles_missing: bool = False  # accepts NaN natively: no imputer in front
    needs_scaling: bool = False


ESTIMATORS: dict[str, EstimatorSpec] = {
    "LogisticRegression": EstimatorSpec("sklearn.linear_model.LogisticRegression", "classification", needs_scaling=True),
    "RandomForestClassifier": EstimatorSpec("sklearn.ensemble.RandomForestClassifier", "classification"),
    "GradientBoostingClassifier": EstimatorSpec("sklearn.ensemble.GradientBoostingClassifier", "classification"),
    "HistGradientBoostingClassifier": EstimatorSpec(
        "sklearn.ensemble.HistGradientBoostingClassifier", "classification", handles_missing=True
    ),
    "LinearRegression": EstimatorSpec("sklearn.linear_model.LinearRegression", "regression", needs_scaling=True),
    "Ridge": EstimatorSpec("sklearn.linear_model.Ridge", "regression", needs_scaling=True),
    "RandomForestRegressor": EstimatorSpec("sklearn.ensemble.RandomForestRegressor", "regression"),
    "HistGradientBoostingRegressor": EstimatorSpec(
        "sklearn.ensemble.HistGradientBoostingRegressor", "regression", handles_missing=True
    ),
}


@dataclass(frozen=True)
class TrainingConfig:
    estimator: str
    target: str
    params: dict[str, Any] = field(default_factory=dict)
    features: tuple[str, ...] | None = None  # None: every column but the target (and `exclude`)
    exclude: tuple[str, ...] = ()
    test_fraction: float = 0.2
    seed: int = 42

    @property
    def spec(self) -> EstimatorSpec:
        return ESTIMATORS[self.estimator]

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimator": self.estimator,
            "target": self.target,
            "params": self.params,
            "features": list(self.features) if self.features is not None else None,
            "exclude": list(self.exclude),
            "test_fraction": self.test_fraction,
            "seed": self.seed,
        }


_KEYS = {"estimator", "target", "params", "features", "exclude", "test_fraction", "seed"}


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
    for key in ("estimator", "target"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ConfigError(f"config needs {key!r} as a non-empty string")
    if raw["estimator"] not in ESTIMATORS:
        raise ConfigError(f"estimator {raw['estimator']!r} is not allowed; choose one of {sorted(ESTIMATORS)}")
    params = raw.get("params") or {}
    if not isinstance(params, dict):
        raise ConfigError("config 'params' must be a JSON object of estimator parameters")
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
    config = TrainingConfig(
        estimator=raw["estimator"],
        target=raw["target"],
        params=params,
        features=tuple(features) if features is not None else None,
        exclude=tuple(exclude),
        test_fraction=float(test_fraction),
        seed=seed,
    )
    build_estimator(config)  # parameter names are checked here, before data is read
    return config


def build_estimator(config: TrainingConfig):
    """The estimator with its params set; unknown or ill-typed params raise ConfigError."""
    module_name, cls_name = config.spec.import_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), cls_name)
    try:
        estimator = cls(**config.params)
    except TypeError as exc:
        valid = sorted(cls().get_params())
        raise ConfigError(f"{config.estimator}: {exc}; valid params are {valid}") from None
    if "random_state" in estimator.get_params() and "random_state" not in config.params:
        estimator.set_params(random_state=config.seed)
    try:
        estimator._validate_params()  # scikit-learn's own type/range check of every param
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{config.estimator}: {exc}") from None
    return estimator
