"""Errors a user can act on. The CLI prints them as one line and exits 2 (no traceback)."""


class EvalsuiteError(Exception):
    """Base class: the message names the problem and the fix."""

    exit_code = 2


class UsageError(EvalsuiteError):
    """Bad arguments, unknown names, missing data, unwritable paths."""


class PluginError(EvalsuiteError):
    """A plugin failed to import or is malformed."""


class DataError(EvalsuiteError):
    """A data set is missing or not in the expected format."""


class BackendError(EvalsuiteError):
    """A model could not be loaded or served."""


class JudgeHealthError(EvalsuiteError):
    """Too many judge verdicts could not be parsed: the run is kept, its judged numbers are not trustworthy."""

    exit_code = 1
