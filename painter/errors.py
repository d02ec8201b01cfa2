"""Exception types, one per failure a user can act on.

Every message names the thing that was wrong (a file, a key, a value) and, where there is one,
what to do about it, so that the CLI can print it as is.
"""


class PainterError(Exception):
    """Base class: the CLI prints these without a traceback."""


class ModelNotFoundError(PainterError):
    """A model name or directory could not be resolved to files on disk."""


class ConfigError(PainterError):
    """A model's config.json is missing fields or describes sizes that cannot fit together."""


class CheckpointError(PainterError):
    """Weights are missing, unexpected, mis-shaped, truncated or unreadable."""


class PromptError(PainterError):
    """A prompt that cannot be painted (empty, or nothing the vocabulary knows)."""


class SamplingError(PainterError):
    """A sampling parameter is out of range (top-k, top-p, temperature, number of images, seed)."""


class DataError(PainterError):
    """Input or output files for batch jobs that cannot be read or written."""


class DeviceError(PainterError):
    """A device or precision that this machine cannot provide."""
