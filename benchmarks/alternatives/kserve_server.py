"""The KServe baseline: a ``kserve.Model`` around the benchmark's estimator, served by KServe's
own ModelServer (one uvicorn worker; gRPC off unless ``--grpc-port``). Its own v1 protocol
(``{"instances"}``) and the Open Inference Protocol (an InferRequest, as KServe's sklearn server
reads it). Runs in KServe's virtualenv, not the project's.

    python kserve_server.py --estimator-file model.skops --trusted '["numpy.dtype", ...]' --port 8080
"""

import argparse
import json

import kserve
import numpy as np
import skops.io as sio
from kserve.utils.utils import get_predict_input, get_predict_response


class Estimator(kserve.Model):
    def __init__(self, name: str, path: str, trusted: list[str]):
        super().__init__(name)
        self.path, self.trusted, self.estimator = path, trusted, None

    def load(self) -> bool:
        with open(self.path, "rb") as f:
            self.estimator = sio.loads(f.read(), trusted=self.trusted)
        self.ready = True
        return self.ready

    async def predict(self, payload, headers=None, response_headers=None):
        if isinstance(payload, dict):
            return {"predictions": self.estimator.predict(np.asarray(payload["instances"], dtype=float)).tolist()}
        return get_predict_response(payload, self.estimator.predict(get_predict_input(payload)), self.name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--estimator-file", required=True)  # not --model: KServe's own parser reads argv too
    parser.add_argument("--trusted", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=0)
    args, _ = parser.parse_known_args()
    model = Estimator("hgb", args.estimator_file, json.loads(args.trusted))
    model.load()
    kserve.ModelServer(http_port=args.port, workers=1, enable_grpc=bool(args.grpc_port),
                       grpc_port=args.grpc_port or 8081).start([model])
