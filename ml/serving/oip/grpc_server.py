"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), in the HTTP
server's own process and event loop: the same model, micro-batcher, hot swaps and metrics.

Inputs are read from ``raw_input_contents`` or from each tensor's typed contents; outputs go back
raw when the inputs came raw (tritonclient's ``as_numpy`` reads raw outputs only), else typed.
Errors carry the protocol's status codes: INVALID_ARGUMENT for a bad request, NOT_FOUND for an
unknown model or a version not served, UNAVAILABLE before a model is loaded or when a
prediction times out, INTERNAL when the model fails. Any other method is UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
from grpc import aio

from ml.serving.inputs import InputError
from ml.serving.model import ModelFailure
from ml.serving.oip import messages as M
from ml.serving.oip import tensors as T
from ml.serving.oip.service import NotReady, server_metadata

_STATUS = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.INVALID_ARGUMENT,
           503: grpc.StatusCode.UNAVAILABLE}
_HTTP = {grpc.StatusCode.OK: 200, grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404,
         grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DEADLINE_EXCEEDED: 504, grpc.StatusCode.INTERNAL: 500}
# the largest message either way; a request over it is refused by gRPC itself (RESOURCE_EXHAUSTED)
MAX_MESSAGE_BYTES = 64 << 20


def _decode(request) -> list[T.Tensor]:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InputError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: give one per input, "
                         f"in order, or none")
    out = []
    for i, tensor in enumerate(request.inputs):
        if raw:
            if tensor.HasField("contents"):
                raise InputError(f"input {tensor.name!r}: typed contents and raw_input_contents together; use one")
            out.append(T.from_raw(tensor.name, tensor.datatype, list(tensor.shape), raw[i]))
        else:
            out.append(T.from_contents(tensor.name, tensor.datatype, list(tensor.shape), tensor.contents))
    return out


def numeric_matrix(request, schema, max_rows: int) -> np.ndarray | None:
    """The float64 matrix of a numeric model's request whose inputs are exactly its number
    features as FP64 vectors (typed or raw) of one length, all finite: what most requests are,
    built without a tensor object per input (a single typed row: one list, one array; ~15 us for
    ten features against ~27 us filling a matrix column by column). None: the general path
    decides (it names what is wrong, and takes every other datatype and shape)."""
    inputs, width = request.inputs, schema.width
    if not schema.numeric or len(inputs) != width:
        return None
    raw, index, kinds = request.raw_input_contents, schema.index, schema.kinds
    if raw and len(raw) != width:
        return None
    columns: list = [None] * width
    rows = None
    for i, tensor in enumerate(inputs):
        c = index.get(tensor.name)
        if c is None or columns[c] is not None or tensor.datatype != "FP64" or kinds[c] != "number":
            return None
        shape = tensor.shape
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            return None
        n = shape[0]
        if rows is None:
            if not 0 < n <= max_rows:
                return None
            rows = n
        elif n != rows:
            return None
        if raw:
            if len(raw[i]) != 8 * n:
                return None
            columns[c] = np.frombuffer(raw[i], "<f8")
        else:
            values = tensor.contents.fp64_contents
            if len(values) != n:
                return None
            columns[c] = values
    if rows == 1 and not raw:
        first = [values[0] for values in columns]
        total = sum(first)  # finite iff every value is (an overflow to inf only sends it down the general path)
        return np.array([first]) if total - total == 0.0 else None
    matrix = np.empty((rows, width))
    for c, values in enumerate(columns):
        matrix[:, c] = values
    return matrix if np.isfinite(matrix).all() else None


class InferenceService:
    """One method per RPC; ``server`` is the running ``ModelServer``."""

    def __init__(self, server):
        self.server = server
        self.protocol = server.protocol

    async def _call(self, rpc: str, context, work):
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await work()
        except InputError as exc:
            code, message = _STATUS.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT), str(exc)
        except ModelFailure as exc:
            code = grpc.StatusCode.DEADLINE_EXCEEDED if exc.status == 504 else grpc.StatusCode.INTERNAL
            message = str(exc)
        except asyncio.TimeoutError:
            code, message = grpc.StatusCode.UNAVAILABLE, "prediction timed out; retry"
        except Exception as exc:  # a bug, not the client's fault: say so, keep serving
            from ml.serving.app import _json_line

            _json_line("error", "unhandled error", rpc=rpc, error=repr(exc))
            code, message = grpc.StatusCode.INTERNAL, "internal error"
        finally:
            self.server.metrics.observe(f"grpc/{rpc}", _HTTP.get(code, 500), time.perf_counter() - started)
        await context.abort(code, message)

    async def ServerLive(self, request, context):
        return M.CLASSES["ServerLiveResponse"](live=True)

    async def ServerReady(self, request, context):
        return M.CLASSES["ServerReadyResponse"](ready=self.server.current is not None)

    async def ModelReady(self, request, context):
        async def work():
            try:
                self.protocol.resolve(request.name, request.version)
            except NotReady:
                return M.CLASSES["ModelReadyResponse"](ready=False)
            return M.CLASSES["ModelReadyResponse"](ready=True)

        return await self._call("ModelReady", context, work)

    async def ServerMetadata(self, request, context):
        return M.CLASSES["ServerMetadataResponse"](**server_metadata())

    async def ModelMetadata(self, request, context):
        async def work():
            meta = self.protocol.metadata(self.protocol.resolve(request.name, request.version))
            tensor = M.ModelMetadataResponse.TensorMetadata
            return M.ModelMetadataResponse(
                name=meta["name"], versions=meta["versions"], platform=meta["platform"],
                inputs=[tensor(**t) for t in meta["inputs"]], outputs=[tensor(**t) for t in meta["outputs"]])

        return await self._call("ModelMetadata", context, work)

    async def ModelInfer(self, request, context):
        async def work():
            model = self.protocol.resolve(request.model_name, request.model_version)
            payload = numeric_matrix(request, model.schema, self.server.config.max_rows)
            if payload is None:
                payload = self.protocol.rows(model, _decode(request))
            results = await self.protocol.infer(model, payload, [o.name for o in request.outputs],
                                                request.id)
            response = M.ModelInferResponse(model_name=self.protocol.protocol_name(model),
                                            model_version=model.version, id=request.id)
            raw = bool(request.raw_input_contents)
            for name, datatype, shape, data in results:
                out = response.outputs.add(name=name, datatype=datatype, shape=shape)
                if raw:
                    response.raw_output_contents.append(T.raw_of(datatype, data))
                else:
                    getattr(out.contents, T.CONTENTS_FIELD[datatype]).extend(
                        data if datatype == "BYTES" else data.tolist())
            return response

        return await self._call("ModelInfer", context, work)


def handler(service: InferenceService) -> grpc.GenericRpcHandler:
    methods = {}
    for rpc, (request, response) in M.METHODS.items():
        methods[rpc] = grpc.unary_unary_rpc_method_handler(
            getattr(service, rpc), request_deserializer=M.CLASSES[request].FromString,
            response_serializer=M.CLASSES[response].SerializeToString)
    return grpc.method_handlers_generic_handler(f"{M.PACKAGE}.{M.SERVICE}", methods)


async def start_grpc(server, host: str, port: int) -> aio.Server:
    """Serve the protocol on ``host:port`` from the running event loop. Several worker processes
    may share one port (SO_REUSEPORT, gRPC's default on Linux)."""
    grpc_server = aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                                      ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
    grpc_server.add_generic_rpc_handlers((handler(InferenceService(server)),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = grpc_server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot serve gRPC on {address}: {exc}; is the port taken? Choose another with "
                           f"--grpc-port (ML_SERVE_GRPC_PORT)") from None
    if bound == 0:
        raise RuntimeError(f"cannot serve gRPC on {address}: the port is taken or the address is not this "
                           f"machine's; choose another with --grpc-port (ML_SERVE_GRPC_PORT)")
    await grpc_server.start()
    from ml.serving.app import _json_line

    _json_line("info", "serving the Open Inference Protocol over gRPC", address=address, port=bound)
    return grpc_server
