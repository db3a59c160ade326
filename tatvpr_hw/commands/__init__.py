"""CLI command groups; each module defines ``register(app, export_app)``."""
