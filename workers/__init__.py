"""Everything that runs inside a worker: Celery app, tasks, pipeline, retries, providers."""
