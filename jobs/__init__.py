"""The domain and the front door: settings, status, models, repository, service, API, CLI."""
