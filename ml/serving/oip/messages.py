"""The Open Inference Protocol's gRPC messages, built from descriptors written here in Python.

Why not protoc's generated code: generated modules are tied to the protobuf release that made
them (a major version apart, they warn or refuse to load), and the server runs on whichever
protobuf the deployment has. A descriptor is plain data, valid on any protobuf release.
``open_inference.proto`` beside this file is the same API for other languages;
tests/serving/test_open_inference_protocol.py compiles it and checks the two agree field by field.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE, SERVICE = "inference", "GRPCInferenceService"
FILE_NAME = "open_inference.proto"

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"bool": _F.TYPE_BOOL, "string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES, "int32": _F.TYPE_INT32,
            "int64": _F.TYPE_INT64, "uint32": _F.TYPE_UINT32, "uint64": _F.TYPE_UINT64, "float": _F.TYPE_FLOAT,
            "double": _F.TYPE_DOUBLE}

# message -> fields (name, type, number, repeated); a type starting with "." names a message,
# "map:<Message>" a map<string, Message>, a key of ONEOF its oneof's name
PARAMETER = ".inference.InferParameter"
CONTENTS = ".inference.InferTensorContents"
MESSAGES: dict[str, list[tuple]] = {
    "ServerLiveRequest": [],
    "ServerLiveResponse": [("live", "bool", 1)],
    "ServerReadyRequest": [],
    "ServerReadyResponse": [("ready", "bool", 1)],
    "ModelReadyRequest": [("name", "string", 1), ("version", "string", 2)],
    "ModelReadyResponse": [("ready", "bool", 1)],
    "ServerMetadataRequest": [],
    "ServerMetadataResponse": [("name", "string", 1), ("version", "string", 2), ("extensions", "string", 3, True)],
    "ModelMetadataRequest": [("name", "string", 1), ("version", "string", 2)],
    "ModelMetadataResponse": [
        ("name", "string", 1), ("versions", "string", 2, True), ("platform", "string", 3),
        ("inputs", ".inference.ModelMetadataResponse.TensorMetadata", 4, True),
        ("outputs", ".inference.ModelMetadataResponse.TensorMetadata", 5, True)],
    "ModelMetadataResponse.TensorMetadata": [("name", "string", 1), ("datatype", "string", 2),
                                             ("shape", "int64", 3, True)],
    "ModelInferRequest": [
        ("model_name", "string", 1), ("model_version", "string", 2), ("id", "string", 3),
        ("parameters", f"map:{PARAMETER}", 4),
        ("inputs", ".inference.ModelInferRequest.InferInputTensor", 5, True),
        ("outputs", ".inference.ModelInferRequest.InferRequestedOutputTensor", 6, True),
        ("raw_input_contents", "bytes", 7, True)],
    "ModelInferRequest.InferInputTensor": [
        ("name", "string", 1), ("datatype", "string", 2), ("shape", "int64", 3, True),
        ("parameters", f"map:{PARAMETER}", 4), ("contents", CONTENTS, 5)],
    "ModelInferRequest.InferRequestedOutputTensor": [("name", "string", 1), ("parameters", f"map:{PARAMETER}", 2)],
    "ModelInferResponse": [
        ("model_name", "string", 1), ("model_version", "string", 2), ("id", "string", 3),
        ("parameters", f"map:{PARAMETER}", 4),
        ("outputs", ".inference.ModelInferResponse.InferOutputTensor", 5, True),
        ("raw_output_contents", "bytes", 6, True)],
    "ModelInferResponse.InferOutputTensor": [
        ("name", "string", 1), ("datatype", "string", 2), ("shape", "int64", 3, True),
        ("parameters", f"map:{PARAMETER}", 4), ("contents", CONTENTS, 5)],
    "InferParameter": [("bool_param", "bool", 1, False, "parameter_choice"),
                       ("int64_param", "int64", 2, False, "parameter_choice"),
                       ("string_param", "string", 3, False, "parameter_choice"),
                       ("double_param", "double", 4, False, "parameter_choice"),
                       ("uint64_param", "uint64", 5, False, "parameter_choice")],
    "InferTensorContents": [
        ("bool_contents", "bool", 1, True), ("int_contents", "int32", 2, True), ("int64_contents", "int64", 3, True),
        ("uint_contents", "uint32", 4, True), ("uint64_contents", "uint64", 5, True),
        ("fp32_contents", "float", 6, True), ("fp64_contents", "double", 7, True),
        ("bytes_contents", "bytes", 8, True)],
}
METHODS = {  # rpc -> (request, response)
    "ServerLive": ("ServerLiveRequest", "ServerLiveResponse"),
    "ServerReady": ("ServerReadyRequest", "ServerReadyResponse"),
    "ModelReady": ("ModelReadyRequest", "ModelReadyResponse"),
    "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse"),
    "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse"),
    "ModelInfer": ("ModelInferRequest", "ModelInferResponse"),
}


def _field(message: descriptor_pb2.DescriptorProto, path: str, spec: tuple) -> None:
    """One field of the message at ``path`` (".inference.Name"), as ``MESSAGES`` gives it."""
    name, kind, number, repeated, oneof = spec + (False, None)[len(spec) - 3:]
    field = message.field.add(name=name, number=number, json_name=_camel(name),
                              label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if kind.startswith("map:"):  # map<string, V>: a repeated nested <Name>Entry {key = 1; value = 2}
        entry = message.nested_type.add(name="".join(p.title() for p in name.split("_")) + "Entry")
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, label=_F.LABEL_OPTIONAL, type=_F.TYPE_STRING, json_name="key")
        entry.field.add(name="value", number=2, label=_F.LABEL_OPTIONAL, type=_F.TYPE_MESSAGE,
                        type_name=kind[4:], json_name="value")
        field.label, field.type = _F.LABEL_REPEATED, _F.TYPE_MESSAGE
        field.type_name = f"{path}.{entry.name}"
    elif kind.startswith("."):
        field.type, field.type_name = _F.TYPE_MESSAGE, kind
    else:
        field.type = _SCALARS[kind]
    if oneof is not None:
        names = [o.name for o in message.oneof_decl]
        if oneof not in names:
            message.oneof_decl.add(name=oneof)
            names.append(oneof)
        field.oneof_index = names.index(oneof)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """The protocol's file descriptor: what ``protoc`` makes of open_inference.proto."""
    proto = descriptor_pb2.FileDescriptorProto(name=FILE_NAME, package=PACKAGE, syntax="proto3")
    made: dict[str, descriptor_pb2.DescriptorProto] = {}
    for path in MESSAGES:  # parents come before their nested messages
        parent, _, leaf = path.rpartition(".")
        message = (made[parent].nested_type if parent else proto.message_type).add(name=leaf)
        made[path] = message
    for path, fields in MESSAGES.items():
        for spec in fields:
            _field(made[path], f".{PACKAGE}.{path}", spec)
    service = proto.service.add(name=SERVICE)
    for rpc, (request, response) in METHODS.items():
        service.method.add(name=rpc, input_type=f".{PACKAGE}.{request}", output_type=f".{PACKAGE}.{response}")
    return proto


def _classes() -> dict[str, type]:
    pool = descriptor_pool.DescriptorPool()  # its own pool: never clashes with a client's generated code
    pool.Add(file_descriptor())
    classes = message_factory.GetMessageClassesForFiles([FILE_NAME], pool)
    return {full[len(PACKAGE) + 1:]: cls for full, cls in classes.items()}


CLASSES = _classes()
ModelInferRequest = CLASSES["ModelInferRequest"]
ModelInferResponse = CLASSES["ModelInferResponse"]
ModelMetadataResponse = CLASSES["ModelMetadataResponse"]
InferTensorContents = CLASSES["InferTensorContents"]
