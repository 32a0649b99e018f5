"""The project's error types. Library code raises them; only CLI edges turn them into one line."""


class ModgsError(Exception):
    """Base of every error modgs_ns raises on purpose (bad input, stale data, bad options)."""


class SceneFormatError(ModgsError, ValueError):
    """The scene folder does not hold a readable modgs scene; the message names what is wrong."""


class CacheError(ModgsError, ValueError):
    """The scene's flow / alignment / 3D-pair caches are missing, stale or unreadable."""


class PreprocessError(ModgsError, ValueError):
    """modgs-preprocess cannot turn its input into a scene; the message names the input or flag."""


class ConfigError(ModgsError, ValueError):
    """Options that cannot work together (checked where the run is set up)."""
