"""Errors a user can fix themselves: printed as one clear line naming the file or key, no traceback."""


class UserError(Exception):
    """Bad input: a missing file, a layout that is not the expected one, a config typo."""
