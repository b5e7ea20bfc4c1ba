"""EvaluateModelOperator: champion/challenger on the same held-out rows, recorded in the registry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context

DIRECTIONS = ("maximize", "minimize")


def decide(candidate: float, champion: float | None, direction: str, margin: float) -> tuple[bool, str]:
    """(promote?, why). The first model ever promotes itself (it bootstraps the alias)."""
    if champion is None:
        return True, "no model holds the alias yet: the candidate bootstraps it"
    gain = candidate - champion if direction == "maximize" else champion - candidate
    if gain >= margin:
        return True, f"improves by {gain:+.4f} (margin {margin})"
    return False, f"improves by {gain:+.4f}, less than the margin {margin}"


class EvaluateModelOperator(BaseOperator):
    """Score the candidate version and the version behind ``alias`` on the candidate's held-out rows.

    Both scores are written to the candidate's registry entry (tags ``eval.*``) and its run
    (metrics ``eval_candidate_<m>``, ``eval_champion_<m>``).

    :returns: ``{"promote", "reason", "metric", "candidate": {...}, "champion": {...} | None}``
    """

    template_fields: Sequence[str] = ("model_name", "version", "alias", "metric", "direction", "margin")
    ui_color = "#dff0d8"

    def __init__(self, *, model_name: str, version: str, alias: str = "production", metric: str = "accuracy",
                 direction: str = "maximize", margin: float = 0.0, mlflow_conn_id: str = "mlflow_default",
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.model_name, self.version, self.alias = model_name, version, alias
        self.metric, self.direction, self.margin, self.mlflow_conn_id = metric, direction, margin, mlflow_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from mlflow.exceptions import MlflowException

        from operators.registry.mlflow_tracking import mlflow_target

        if self.direction not in DIRECTIONS:
            raise AirflowFailException(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        client = mlflow_target(self.mlflow_conn_id).client()
        candidate = client.get_model_version(self.model_name, str(self.version))
        try:
            champion = client.get_model_version_by_alias(self.model_name, self.alias)
        except MlflowException:
            champion = None
        from ml.model_io import load_verified_model, read_holdout

        cand_manifest, cand_model = load_verified_model(candidate.source)
        holdout = read_holdout(cand_manifest)
        target_column = cand_manifest.extra["target"]
        cand_scores = self._score(cand_manifest, cand_model, holdout, target_column)
        if self.metric not in cand_scores:
            raise AirflowFailException(f"metric {self.metric!r} is not computed for this model; "
                                       f"choose one of {sorted(cand_scores)}")
        champ_scores = None
        if champion is not None and str(champion.version) != str(candidate.version):
            champ_scores = self._score(*load_verified_model(champion.source), holdout, target_column)
        promote, why = decide(cand_scores[self.metric], champ_scores[self.metric] if champ_scores else None,
                              self.direction, float(self.margin))
        if champion is not None and str(champion.version) == str(candidate.version):
            promote, why = False, f"version {candidate.version} already holds {self.alias!r}"
        self.log.info("%s on %d held-out rows: candidate v%s %s=%.4f, %s -> %s (%s)", self.metric, holdout.num_rows,
                      candidate.version, self.metric, cand_scores[self.metric],
                      f"{self.alias} v{champion.version} {self.metric}={champ_scores[self.metric]:.4f}"
                      if champ_scores else f"no other {self.alias} model",
                      "promote" if promote else "do not promote", why)
        tags = {f"eval.candidate.{k}": f"{v:.6f}" for k, v in cand_scores.items()}
        if champ_scores:
            tags.update({f"eval.champion.{k}": f"{v:.6f}" for k, v in champ_scores.items()})
            tags["eval.champion_version"] = str(champion.version)
        tags.update({"eval.decision": "promote" if promote else "keep", "eval.reason": why})
        for key, value in tags.items():
            client.set_model_version_tag(self.model_name, str(candidate.version), key, value)
        if candidate.run_id:
            for prefix, scores in (("candidate", cand_scores), ("champion", champ_scores or {})):
                for k, v in scores.items():
                    client.log_metric(candidate.run_id, f"eval_{prefix}_{k}", v)
        return {"promote": promote, "reason": why, "metric": self.metric, "version": str(candidate.version),
                "candidate": cand_scores,
                "champion": {"version": str(champion.version), **champ_scores} if champ_scores else None}

    @staticmethod
    def _score(manifest, model, holdout, target_column: str) -> dict[str, float]:
        """The model's held-out metrics on the candidate's held-out rows, from its predictions
        through the model interface: the same for every model, built-in or a team's own."""
        import numpy as np

        from ml.train import checked_predict, evaluate

        names = [c["name"] for c in manifest.schema]
        missing = [n for n in names if n not in holdout.column_names]
        if missing:
            raise AirflowFailException(f"model {manifest.uri} needs features {missing} that the held-out rows lack")
        y = holdout.column(target_column).to_numpy(zero_copy_only=False)
        try:
            pred, proba = checked_predict(model, holdout.select(names), manifest.extra.get("model", "model"))
        except ValueError as exc:  # the model broke its contract on these rows: say so, do not retry
            raise AirflowFailException(f"model {manifest.uri}: {exc}") from None
        task = manifest.extra.get("task", "classification")
        classes = manifest.extra.get("classes") or sorted(np.unique(y).tolist())
        return evaluate(y, pred, proba, classes, task)
