"""Errors that reach the user as one line on stderr (exit code 1)."""


class AvsplitError(Exception):
    """An input or setting problem the user can fix.

    The message is one sentence saying what is wrong and what to do; the CLI prints it
    without a traceback and exits with code 1.
    """


class MediaError(AvsplitError):
    """A file cannot be read as the media we need (missing, not media, no audio, ...)."""


class WeightsUnavailableError(AvsplitError):
    """A bundled weights file is missing or does not match its sha256 (the install is broken;
    features that can do without that model skip it with a note)."""
