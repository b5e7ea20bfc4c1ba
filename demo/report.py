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
    parser.add_argument("--own-text", help="a text model: the curl to paste sends this text (put your own in)")
    parser.add_argument("--levels", nargs="*", default=[], metavar="LEVEL=STATE_DIR",
                        help="the model's levels and their local endpoints: say which version each serves")
    args = parser.parse_args()

    from mlflow.tracking import MlflowClient

    from ml import artifacts
    from operators.registry.register_model import find_version

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
        "model": newest.extra.get("model", "sklearn"),
        "estimator": newest.extra.get("estimator"),
        "n_train": newest.extra.get("n_train"),
        "model_digest": newest.digest,
        "source": version.source,
        "run_id": version.tags.get("lineage.run_id"),
    }, indent=2))
    if args.levels:
        report_levels(args.levels)
    if args.endpoint_state:
        return report_endpoint(args.endpoint_state, newest, client, args.model_name, args.own_text)
    return 0


def report_levels(levels: list[str]) -> None:
    """One line per service level: its endpoint and the version it serves."""
    from pathlib import Path

    from operators.deploy.endpoint_client import ping
    from operators.deploy.targets.local import LocalServerTarget

    for level in levels:
        name, _, state_dir = level.partition("=")
        answer = ping(LocalServerTarget(Path(state_dir).name, state_dir=state_dir).url) if Path(state_dir).exists() \
            else None
        print(f"level {name}: endpoint {Path(state_dir).name} "
              f"{'serves version ' + str(answer['model_version']) if answer else 'serves nothing'}")


def report_endpoint(state_path: str, manifest, client, model_name: str, own_text: str | None = None) -> int:
    """Show the endpoint: which version serves, how fast the deploy took, and a real prediction.

    When the endpoint is not running (``make demo-stop``) and this run's gate kept production,
    nothing was deployed: serve the production version again, and say so.
    """
    import os
    import shlex
    import time
    from pathlib import Path

    from ml.model_io import read_holdout
    from operators.deploy.targets import Served
    from operators.deploy.targets.local import LocalServerTarget
    from operators.deploy.endpoint_client import invoke, ping

    if not os.path.exists(state_path):
        print("no endpoint was deployed (the gate kept the current model, or deploy is off)")
        return 0
    state_dir = Path(state_path).parent
    target = LocalServerTarget(state_dir.name, state_dir=str(state_dir))
    if ping(target.url) is None:
        try:
            production = client.get_model_version_by_alias(model_name, "production")
        except Exception:  # noqa: BLE001 - no alias: nothing to serve
            print(f"endpoint {target.url} is not running and no version holds 'production'; "
                  "the next promoted version will start it")
            return 0
        print(f"\nendpoint {target.url} was not running (make demo-stop?); this run deployed nothing new, "
              f"so it serves production version {production.version} again")
        target.deploy(Served(str(production.version), production.source))
        deadline = time.monotonic() + 60
        while (answer := ping(target.url)) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if answer is None:
            print(f"endpoint did not come up in 60 s; see {state_dir / 'server.log'}")
            return 1
    with open(state_path) as f:
        state = json.load(f)
    served = ping(target.url) or {}
    row = read_holdout(manifest, rows=1).to_pylist()[0]
    names = [c["name"] for c in manifest.schema]
    answer = invoke(target.url, [[row[n] for n in names]], timeout=10)
    body = json.dumps({"instances": [[row[n] for n in names]]}, ensure_ascii=False)
    if own_text is not None and len(names) == 1:  # a text model: one text to type
        body = json.dumps({"instances": [{names[0]: own_text}]}, ensure_ascii=False)
    timing = (state.get("served") or {}).get("seconds_to_serve") \
        if (state.get("served") or {}).get("version") == served.get("model_version") else None
    print()
    print(f"endpoint {target.url} serves version {served.get('model_version')} "
          f"(deploy asked -> serving: {timing} s)")
    print("try it:")
    print(f"  curl -s -X POST {target.url}/invocations -H 'Content-Type: application/json' -d {shlex.quote(body)}")
    shown = f" {json.dumps(row[names[0]], ensure_ascii=False)[:80]}" if own_text is not None else ""
    print(f"prediction for a held-out row{shown} (true label {row[manifest.extra['target']]}): "
          f"{json.dumps(answer, ensure_ascii=False)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
