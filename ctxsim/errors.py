"""Errors that carry a message meant for the user (the CLI prints them as one line)."""


class CtxsimError(Exception):
    """Base class of user-facing errors: bad input, missing data, unusable registry."""


class ConfigError(CtxsimError, ValueError):
    """An invalid configuration value or an unknown override key."""


class DataError(CtxsimError):
    """Missing data root, missing or unreadable files, wrong layout."""


class RegistryError(CtxsimError):
    """The registry cannot be opened or used (unreachable, locked, read-only, newer schema)."""
