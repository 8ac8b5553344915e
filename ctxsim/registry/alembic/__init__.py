"""The registry's Alembic environment (``env.py``, ``versions/``), driven by ctxsim.registry.migrations."""
