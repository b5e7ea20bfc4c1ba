"""The models-and-endpoints page behind ``plugins/ml_models_plugin.py`` (api-server only)."""
