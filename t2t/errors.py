"""Errors a user can cause; the command line prints them as one line and exits non-zero."""


class UserError(Exception):
    """Bad input from the user: a missing file, an unknown name, a malformed value."""
