"""The one exception type users see: a problem with their input, told in one line."""


class PruneError(Exception):
    """Bad input or state the user can fix. The CLI prints ``error: <message>`` and exits 2."""
