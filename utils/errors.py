"""The one exception type the CLI turns into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user (config, paths, data, checkpoints): shown as one line, exit code 2."""


class ConfigError(UserError):
    """A config file or override that does not fit the schema."""


class DatasetNotFoundError(UserError):
    """A dataset folder or file that is missing or has the wrong layout."""
