"""Watching served versions: labelled feedback and drift of captured predictions (docs/monitoring.md)."""
