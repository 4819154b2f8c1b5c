"""Domain errors raised by services; app/errors.py maps them to HTTP answers."""

from __future__ import annotations

from dataclasses import dataclass


class WinbackError(Exception):
    """Base of every domain error."""


class InvalidLink(WinbackError):
    """A survey or unsubscribe link that is tampered, unknown, revoked or expired."""


class ExpiredLink(InvalidLink):
    """A genuine link past its lifetime; answered like any invalid link."""


class NotFound(WinbackError):
    """A record named by id does not exist."""


class InvalidInput(WinbackError):
    """Input a service refuses, with a message fit to show to the person who sent it."""


class AuthenticationFailed(WinbackError):
    """Wrong email or password, or an inactive account (never says which)."""


@dataclass(frozen=True)
class RowError:
    """One bad cell in an imported file: where it is, what it held and why it was refused."""

    file: str
    line: int
    column: str
    value: str
    reason: str

    def __str__(self) -> str:
        shown = self.value if len(self.value) <= 60 else self.value[:57] + "..."
        return f"{self.file}:{self.line}: column {self.column!r}: {self.reason} (value: {shown!r})"


class UnreadableFile(WinbackError):
    """A file that cannot be read or recognised; nothing was imported."""


class MailNotSent(WinbackError):
    """The mail server refused or failed a message sent at once (a test, not a campaign's)."""
