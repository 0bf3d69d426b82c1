"""Chaos suite: real jobs through real processes while workers, Redis, PostgreSQL or S3 fail."""
