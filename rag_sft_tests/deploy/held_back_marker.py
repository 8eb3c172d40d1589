"""The names shared by the UI test and its code location (`held_back_location.py`), kept apart
from that location: importing it replaces the confidence check for the whole process."""

HOLD_BACK_MARKER = "HOLD_BACK"
HELD_BACK_REASON = "confidence: failed on purpose by the UI test"
