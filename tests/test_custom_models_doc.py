"""docs/custom-models.md stays true: the model it shows in full is the example package's, line for
line, and its "try it on your machine" steps (train with ml.train, serve with ml.serve, the curl
body) work as written."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from demo.moderation_posts import table as posts_table
from tests.helpers import write_snapshot
from tests.serving_helpers import ServerProcess

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "custom-models.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC, re.S)


def without_docstrings(source: str) -> str:
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
                getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False)


def class_source(source: str, name: str) -> str:
    tree = ast.parse(source)
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name]
    for node in ast.walk(cls):  # annotations may be left out in the doc: compare the code only
        if isinstance(node, ast.FunctionDef):
            node.returns = None
            for arg in node.args.args:
                arg.annotation = None
    return without_docstrings(ast.unparse(cls))


def test_the_model_shown_in_full_is_the_example_packages_model():
    shown = next(b for b in code_blocks("python") if "class KeywordModel(Model):" in b)
    real = (REPO / "examples" / "keyword_moderation" / "keyword_moderation" / "model.py").read_text()
    assert class_source(shown, "KeywordModel") == class_source(real, "KeywordModel")


def test_the_smallest_model_shown_is_the_one_the_contract_tests_use():
    shown = next(b for b in code_blocks("python") if "class MajorityModel(Model):" in b)
    real = (REPO / "tests" / "models" / "broken.py").read_text()
    assert class_source(shown, "MajorityModel") == class_source(real, "MajorityModel")
    assert len(shown.strip().splitlines()) <= 30


def test_the_try_it_steps_train_and_serve_the_example(tmp_path):
    steps = next(b for b in code_blocks("bash") if "python -m ml.train" in b)
    config = json.loads(re.search(r"--config '(\{.*?\})'", steps, re.S).group(1))
    env_line = re.search(r"export (ML_MODEL_CLASSES=\S+)", steps).group(1)
    name, value = env_line.split("=", 1)
    body = re.search(r"-d '(\{.*?\})'", steps, re.S).group(1)
    write_snapshot(str(tmp_path / "snapshot"), posts_table(600, seed=9).select(["text", "label"]))
    env = {**os.environ, name: value}
    subprocess.run([sys.executable, "-m", "ml.train", "--data", str(tmp_path / "snapshot"), "--output",
                    str(tmp_path / "keywords-model"), "--config", json.dumps(config)], env=env, check=True,
                   capture_output=True, cwd=REPO, timeout=300)
    with ServerProcess("--model", str(tmp_path / "keywords-model"), env={name: value}) as srv:
        request = urllib.request.Request(srv.url + "/invocations", data=body.encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            answer = json.loads(resp.read())
    assert answer["predictions"] == ["flagged"]  # the doc's blocked term in the doc's text
