"""The KServe baseline: a ``kserve.Model`` around the benchmark's estimator, served by KServe's
own ModelServer (one uvicorn worker, gRPC off). Runs in KServe's virtualenv, not the project's.

    python kserve_server.py --estimator-file model.skops --trusted '["numpy.dtype", ...]' --port 8080
"""

import argparse
import json

import kserve
import numpy as np
import skops.io as sio


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
        return {"predictions": self.estimator.predict(np.asarray(payload["instances"], dtype=float)).tolist()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--estimator-file", required=True)  # not --model: KServe's own parser reads argv too
    parser.add_argument("--trusted", required=True)
    parser.add_argument("--port", type=int, required=True)
    args, _ = parser.parse_known_args()
    model = Estimator("hgb", args.estimator_file, json.loads(args.trusted))
    model.load()
    kserve.ModelServer(http_port=args.port, workers=1, enable_grpc=False).start([model])
