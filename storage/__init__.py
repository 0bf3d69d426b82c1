"""Adapters (DB engine, object stores); import nothing from jobs/ or workers/."""
