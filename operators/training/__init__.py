"""Training: the trainer's command on each compute (local, Kubernetes, SageMaker, Vertex AI) and
the champion/challenger gate on its result."""
