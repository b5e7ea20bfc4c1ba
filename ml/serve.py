"""The model server: ``python -m ml.serve --model URI --host H --port P``.

Serves one model artifact (``--model``), or follows a registry alias
(``--registry-model NAME --alias production``, polling every ``--poll-seconds``). Every
flag has an ``ML_SERVE_*`` environment variable; the admin token is only read from
``ML_SERVE_ADMIN_TOKEN`` (never a flag, so it stays out of process listings).

It also speaks the Open Inference Protocol: the ``/v2`` REST routes always, gRPC on
``--grpc-port`` (``ML_SERVE_GRPC_PORT``), the model named ``--name`` (docs/open-inference.md).

Under Vertex AI the platform's variables win: ``AIP_HTTP_PORT`` is the port,
``AIP_HEALTH_ROUTE`` and ``AIP_PREDICT_ROUTE`` answer as ``/ping`` and ``/invocations``, and
``AIP_STORAGE_URI`` (the model's copy in GCS) is the model when none is given.
"""

from __future__ import annotations

import argparse
import os
import sys


def _env(name: str, default):
    """``ML_SERVE_<name>`` converted to the type of ``default``; ``default`` when unset."""
    value = os.environ.get(f"ML_SERVE_{name}")
    if value is None or default is None:
        return value if value is not None else default
    if isinstance(default, bool):
        return value.lower() in ("1", "true", "yes")
    return type(default)(value)


def parse_args(argv: list[str] | None = None):
    from ml.serving.app import ServeConfig
    from ml.serving.artifact_roots import parse_roots

    d = ServeConfig()
    p = argparse.ArgumentParser(prog="python -m ml.serve", description=__doc__.splitlines()[0])
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", default=_env("MODEL", None) or os.environ.get("AIP_STORAGE_URI"),
                        help="model artifact URI to serve")
    source.add_argument("--registry-model", default=_env("REGISTRY_MODEL", None), help="registered model to follow")
    p.add_argument("--model-version", default=_env("MODEL_VERSION", None), help="version label of --model")
    p.add_argument("--name", default=_env("NAME", None),
                   help="the model's name in the Open Inference Protocol (/v2/models/NAME): the registered model's "
                        "name; default: --registry-model, else the artifact's model name")
    p.add_argument("--grpc-port", type=int, default=_env("GRPC_PORT", 0) or None,
                   help="serve the Open Inference Protocol over gRPC on this port too, in the same process "
                        "(ML_SERVE_GRPC_PORT); default: no gRPC")
    p.add_argument("--alias", default=_env("ALIAS", d.alias))
    p.add_argument("--tracking-uri", default=_env("TRACKING_URI", os.environ.get("MLFLOW_TRACKING_URI")))
    p.add_argument("--host", default=_env("HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("AIP_HTTP_PORT") or _env("PORT", 8080)))
    p.add_argument("--workers", type=int, default=_env("WORKERS", 1),
                   help="processes; each batches on its own. Hot swaps go to one process: use 1 with the admin endpoint")
    p.add_argument("--max-batch", type=int, default=_env("MAX_BATCH", d.max_batch), help="rows per predict call")
    p.add_argument("--max-wait-ms", type=float, default=_env("MAX_WAIT_MS", d.max_wait_ms),
                   help="longest wait for the requests a batch expects: as many as the last batch held (one "
                        "fewer each time fewer come) and those still being read")
    p.add_argument("--predict-threads", type=int, default=_env("PREDICT_THREADS", d.predict_threads),
                   help="OpenMP/BLAS threads per predict; 1 keeps them from starving the event loop")
    p.add_argument("--max-body-bytes", type=int, default=_env("MAX_BODY_BYTES", d.max_body_bytes))
    p.add_argument("--max-rows", type=int, default=_env("MAX_ROWS", d.max_rows))
    p.add_argument("--predict-timeout", type=float, default=_env("PREDICT_TIMEOUT", d.predict_timeout_s),
                   help="seconds a request may wait for its prediction, and a model's predict call may take")
    p.add_argument("--max-text-chars", type=int, default=_env("MAX_TEXT_CHARS", d.max_text_chars),
                   help="the longest string a feature may carry")
    p.add_argument("--poll-seconds", type=float, default=_env("POLL_SECONDS", d.poll_seconds))
    p.add_argument("--artifact-root", action="append", dest="artifact_roots",
                   default=list(parse_roots(_env("ARTIFACT_ROOTS", None))),
                   help="folder (URI) /admin/model may load models from; repeat for several "
                        "(ML_SERVE_ARTIFACT_ROOTS, comma-separated). Without one, /admin/model loads by URI nothing")
    p.add_argument("--capture-rate", type=float, default=_env("CAPTURE_RATE", d.capture_rate),
                   help="share of requests whose rows and answers are captured for monitoring (0.1: one in ten); "
                        "default 0: none")
    p.add_argument("--capture-uri", default=_env("CAPTURE_URI", None),
                   help="where captured requests go, as hourly Parquet partitions (a folder or an object store URI)")
    p.add_argument("--capture-max-rows", type=int, default=_env("CAPTURE_MAX_ROWS", d.capture_max_rows),
                   help="rows capture buffers between writes; past it samples are dropped and counted")
    p.add_argument("--capture-flush-seconds", type=float,
                   default=_env("CAPTURE_FLUSH_SECONDS", d.capture_flush_seconds),
                   help="seconds between capture's writes")
    p.add_argument("--no-access-log", action="store_true", default=not _env("ACCESS_LOG", True))
    p.add_argument("--allow-empty", action="store_true", default=_env("ALLOW_EMPTY", False),
                   help="start with no model: /ping answers 503 until one is deployed through /admin/model")
    args = p.parse_args(argv)
    if not args.model and not args.registry_model and not args.allow_empty:
        p.error("give --model URI or --registry-model NAME (or ML_SERVE_MODEL / ML_SERVE_REGISTRY_MODEL), "
                "or --allow-empty to wait for a deploy through /admin/model")
    if not 0 <= args.capture_rate <= 1:
        p.error(f"--capture-rate {args.capture_rate} is not a share between 0 and 1 (0.1: one request in ten)")
    if args.capture_rate > 0 and not args.capture_uri:
        p.error("--capture-rate needs --capture-uri (ML_SERVE_CAPTURE_URI): where to write the captured requests")
    if args.allow_empty and not os.environ.get("ML_SERVE_ADMIN_TOKEN"):
        p.error("--allow-empty needs ML_SERVE_ADMIN_TOKEN: without the admin endpoint no model could ever arrive")
    if args.allow_empty and not args.artifact_roots:
        p.error("--allow-empty needs --artifact-root (or ML_SERVE_ARTIFACT_ROOTS): the admin endpoint loads models "
                "only from inside the artifact roots")
    config = ServeConfig(
        model_uri=args.model, model_version=args.model_version, registry_model=args.registry_model,
        name=args.name, grpc_port=args.grpc_port, grpc_host=args.host,
        alias=args.alias, tracking_uri=args.tracking_uri, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
        predict_threads=args.predict_threads,
        max_body_bytes=args.max_body_bytes, max_rows=args.max_rows, predict_timeout_s=args.predict_timeout,
        max_text_chars=args.max_text_chars,
        poll_seconds=args.poll_seconds, admin_token=os.environ.get("ML_SERVE_ADMIN_TOKEN") or None,
        access_log=not args.no_access_log, artifact_roots=tuple(args.artifact_roots),
        capture_rate=args.capture_rate, capture_uri=args.capture_uri, capture_max_rows=args.capture_max_rows,
        capture_flush_seconds=args.capture_flush_seconds,
        health_route=os.environ.get("AIP_HEALTH_ROUTE") or None, predict_route=os.environ.get("AIP_PREDICT_ROUTE") or None,
    )
    return args, config


_CONFIG = None


def app_factory():
    """For uvicorn's worker processes (``--workers`` > 1): the config travels in the environment."""
    from ml.serving.app import ModelServer

    _, config = parse_args(os.environ.get("ML_SERVE_ARGV", "").split("\x1f") if os.environ.get("ML_SERVE_ARGV") else [])
    return ModelServer(config)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from ml.serving.app import ModelServer

    argv = sys.argv[1:] if argv is None else argv
    args, config = parse_args(argv)
    common = dict(host=args.host, port=args.port, log_level="warning", access_log=False, lifespan="on",
                  timeout_graceful_shutdown=10, http="httptools")
    if args.workers > 1:
        os.environ["ML_SERVE_ARGV"] = "\x1f".join(argv)
        uvicorn.run("ml.serve:app_factory", factory=True, workers=args.workers, **common)
    else:
        uvicorn.run(ModelServer(config), loop="uvloop", **common)
    return 0


if __name__ == "__main__":
    sys.exit(main())
