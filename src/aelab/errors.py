"""Errors that the command line turns into one clear line instead of a traceback."""


class AelabError(Exception):
    """Base class: the message is shown to the user as it is."""


class ConfigError(AelabError):
    """A params file or override is invalid; the message names the dotted key."""


class DataError(AelabError):
    """A dataset file is missing, truncated or has the wrong shape."""


class CheckpointError(AelabError):
    """A model file cannot be read."""


class TrainingError(AelabError):
    """Training diverged (NaN or infinite loss)."""


class BusyError(AelabError):
    """Another aelab process holds a folder this one needs (the message names its pid)."""
