"""Errors a user can see: a stable machine code plus a one-line human message."""

from __future__ import annotations


class PoflowError(Exception):
    """A failure we understand and can explain in one line (never a traceback).

    ``code`` is stable (tests, the uploads table and frontends rely on it);
    ``message`` is a single human-readable line.
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = " ".join(str(message).split())  # always one line
        super().__init__(f"{code}: {self.message}")

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __reduce__(self):
        # Errors cross process boundaries (Dagster pickles step failures): rebuild from code + message.
        return (self.__class__, (self.code, self.message))

