"""The base of every error lungcad raises on purpose.

Each says what is wrong, with the file, scan or parameter, and what to do; the command line
prints it as one ``error:`` line and exits 2, with no traceback.
"""

from __future__ import annotations


class LungcadError(Exception):
    """An expected failure with a message meant for the user."""
