"""Batch scoring: plan shards, score each in a mapped task, commit the partition once."""
