"""Infrastructure adapters (database engine, object stores). Imports nothing from jobs/ or workers/."""
