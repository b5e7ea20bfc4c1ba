"""A team's own moderation model: rules plus a small NumPy model (see model.py)."""
