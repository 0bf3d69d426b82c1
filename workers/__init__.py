"""Everything that runs inside a worker: Celery app, thin tasks, pipeline, retry policy, providers."""
