"""The model server behind `python -m ml.serve`: one small HTTP contract for every deploy target.

GET /ping, POST /invocations (the SageMaker bring-your-own-container contract), GET /metrics
(Prometheus), GET /openapi.json, and an authenticated POST /admin/model for hot swaps.
"""
