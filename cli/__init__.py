"""The ``ctxsim`` command line (installed as ``ctxsim.cli``)."""
