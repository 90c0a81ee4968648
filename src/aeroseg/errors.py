"""Errors that reach the user as one line: what is wrong and what to do."""


class UserError(Exception):
    """Bad input the user can fix. The CLI prints it as one line and exits with status 2."""


class DatasetNotFoundError(UserError, FileNotFoundError):
    """A dataset directory or file is missing; the message names the path."""


class CheckpointError(UserError):
    """A file or directory is not a loadable AerOSeg or backbone checkpoint."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a batch scheduler) raised like Ctrl+C, so that the same clean-up runs;
    the CLI exits with 128 + the signal number (143)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum
