"""Deploying: a registered version onto an endpoint (targets/ per kind), waited for in the
triggerer, smoke-tested, rolled back on failure, and recorded in the endpoint's ledger."""
