"""Models: the interface (``Model``), the deployment's allow-list of classes, the built-ins, and the
contract checks that keep artifacts data-only. A team's own model subclasses ``ml.models.Model``."""

from ml.models.interface import KINDS, TASKS, Feature, FeatureSchema, Model, ModelContractError

__all__ = ["KINDS", "TASKS", "Feature", "FeatureSchema", "Model", "ModelContractError"]
