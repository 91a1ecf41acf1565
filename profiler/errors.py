"""Errors a user can act on: each names the file, device, field or module at fault."""


class UserError(Exception):
    """Bad input or an unusable device; the message says what to fix."""
