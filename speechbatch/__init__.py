"""The composition root: the console script, the CLI, local mode and process wiring.

The only package that may import every layer (`storage` ← `jobs` ← `workers` ← here, checked
by import-linter in `make lint`); nothing imports it.
"""
