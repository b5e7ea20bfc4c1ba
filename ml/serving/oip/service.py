"""The Open Inference Protocol's operations on the served model, shared by REST and gRPC.

The model's protocol name is ``--name`` (the registered model's name, which the deploy targets
pass), else the followed registered model, else the artifact's model name. Its one version is
the version being served: a request naming another one (the version before a hot swap, say) is
NOT_FOUND, never answered by the model that replaced it. Inference goes through the server's
micro-batcher, so REST, gRPC and ``/invocations`` requests share batches, timeouts and hot swaps.
"""

from __future__ import annotations

import numpy as np

from ml.serving.inputs import InputError
from ml.serving.model import LoadedModel
from ml.serving.oip.tensors import LABEL, PROBABILITIES, Tensor, input_metadata, label_array, rows_of

SERVER_NAME = "ml.serve"
EXTENSIONS = ("binary_tensor_data",)


class ModelNotFound(InputError):
    """An unknown model name, or a version not served (HTTP 404, gRPC NOT_FOUND)."""

    def __init__(self, message: str):
        super().__init__(message, 404)


class NotReady(InputError):
    """No model loaded yet (HTTP 503, gRPC UNAVAILABLE)."""

    def __init__(self, message: str = "no model loaded yet"):
        super().__init__(message, 503)


def server_metadata() -> dict:
    from ml import __version__

    return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}


class OpenInference:
    """What both transports ask of the server: its current model, its name, its batcher."""

    def __init__(self, server):
        self.server = server

    def protocol_name(self, model: LoadedModel) -> str:
        config = self.server.config
        return config.name or config.registry_model or model.name

    def resolve(self, name: str, version: str | None) -> LoadedModel:
        model = self.server.current
        if model is None:
            raise NotReady()
        served = self.protocol_name(model)
        if name != served:
            raise ModelNotFound(f"unknown model {name!r}; this server serves {served!r}")
        if version and version != model.version:
            raise ModelNotFound(f"model {served!r} version {version!r} is not served; version {model.version!r} is")
        return model

    def metadata(self, model: LoadedModel) -> dict:
        return {"name": self.protocol_name(model), "versions": [model.version], "platform": f"ml.serve/{model.name}",
                "inputs": input_metadata(model.schema), "outputs": model.outputs.metadata()}

    def rows(self, model: LoadedModel, tensors: list[Tensor]):
        """The model's payload from one tensor per feature, or InputError naming what is wrong."""
        return rows_of(tensors, model.schema, self.server.config.max_rows)

    async def infer(self, model: LoadedModel, payload, requested: list[str] | None, request_id: str = "",
                    ) -> list[tuple[str, str, list[int], object]]:
        """The outputs asked for (all, when ``requested`` is empty) for ``payload`` (``rows``):
        (name, datatype, shape, data)."""
        outputs = model.outputs
        names = requested or list(outputs.names)
        for n in names:
            if n not in outputs.names:
                raise InputError(f"unknown output {n!r}; this model's outputs are {list(outputs.names)}")
        config = self.server.config
        proba = PROBABILITIES in names
        answers = await self.server.batcher.predict(model, payload, 2 * config.predict_timeout_s, proba=proba)
        if (capture := self.server.capture) is not None:
            capture.offer(request_id, model, payload, [a[0] for a in answers] if proba else answers)
        rows = len(answers)
        result = []
        for n in names:
            if n == LABEL:
                labels = [a[0] for a in answers] if proba else answers
                result.append((LABEL, outputs.label_datatype, [rows], label_array(labels, outputs.label_datatype)))
            else:
                matrix = np.asarray([a[1] for a in answers], dtype=np.float64)
                result.append((PROBABILITIES, "FP64", [rows, len(outputs.classes)], matrix.ravel()))
        return result
