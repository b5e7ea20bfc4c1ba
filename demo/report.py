"""Print the model version the latest demo run registered, with its metrics and lineage."""

from __future__ import annotations

import argparse
import glob
import json
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--artifacts", required=True, help="local artifact root (a directory)")
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--endpoint-state", help="the local endpoint's state.json: show the URL and a prediction")
    args = parser.parse_args()

    from mlflow.tracking import MlflowClient

    from ml import artifacts
    from operators.register_model import find_version

    manifests = glob.glob(f"{args.artifacts}/models/{args.model_name}/*/manifest.json")
    if not manifests:
        print(f"no model artifact under {args.artifacts}/models/{args.model_name}", file=sys.stderr)
        return 1
    newest = max((artifacts.read_manifest(m.rsplit("/", 1)[0], kind="model") for m in manifests),
                 key=lambda m: m.created_at)
    client = MlflowClient(tracking_uri=args.tracking_uri)
    version = find_version(client, args.model_name, newest.digest)
    if version is None:
        print(f"model {newest.uri} (digest {newest.digest[:12]}) is not registered", file=sys.stderr)
        return 1
    total = len(client.search_model_versions(f"name = '{args.model_name}'"))
    print(json.dumps({
        "registered_model": args.model_name,
        "version": version.version,
        "versions_in_registry": total,
        "metrics": newest.extra.get("metrics"),
        "estimator": newest.extra.get("estimator"),
        "n_train": newest.extra.get("n_train"),
        "model_digest": newest.digest,
        "source": version.source,
        "run_id": version.tags.get("lineage.run_id"),
    }, indent=2))
    if args.endpoint_state:
        return report_endpoint(args.endpoint_state, newest)
    return 0


def report_endpoint(state_path: str, manifest) -> int:
    """Show the endpoint: which version serves, how fast the deploy took, and a real prediction."""
    import os
    import shlex
    import urllib.request

    from ml.model_io import read_holdout

    if not os.path.exists(state_path):
        print("no endpoint was deployed (the gate kept the current model, or deploy is off)")
        return 0
    with open(state_path) as f:
        state = json.load(f)
    served = state.get("served") or {}
    row = read_holdout(manifest, rows=1).to_pylist()[0]
    names = [c["name"] for c in manifest.schema]
    body = json.dumps({"instances": [[row[n] for n in names]]})
    request = urllib.request.Request(state["url"] + "/invocations", data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        answer = json.loads(resp.read())
    print()
    print(f"endpoint {state['url']} serves version {served.get('version')} "
          f"(deploy asked -> serving: {served.get('seconds_to_serve')} s)")
    print("try it:")
    print(f"  curl -s -X POST {state['url']}/invocations -H 'Content-Type: application/json' -d {shlex.quote(body)}")
    print(f"prediction for a held-out row (true label {row[manifest.extra['target']]}): {json.dumps(answer)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
