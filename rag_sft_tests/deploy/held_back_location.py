"""The project's code location with a stand-in for a check that fails at ERROR, for the UI tests.

No realistic day fails a check at ERROR (the filter keeps low-confidence records out, the label
mix only warns), yet the UI must show a held-back day for what it is. While the file named by
HOLD_BACK_MARKER exists in RAG_SFT_DATA_DIR, every day's confidence check fails at ERROR (as
`rag_sft_tests.helpers.hold_back_days` does in-process); the code server and each run worker
load this file, so the stand-in holds in the runs the webserver launches. Never import it
from a test: it would replace the check for every test of that process.
"""

import dataclasses
import os
from pathlib import Path

from rag_sft.core import checks
from rag_sft_tests.deploy.held_back_marker import HELD_BACK_REASON, HOLD_BACK_MARKER

_real = checks.confidence_verdict


def _confidence_verdict(*args, **kwargs):
    verdict = _real(*args, **kwargs)
    if (Path(os.environ["RAG_SFT_DATA_DIR"]) / HOLD_BACK_MARKER).exists():
        return dataclasses.replace(verdict, passed=False, severity=checks.ERROR, description=HELD_BACK_REASON)
    return verdict


checks.confidence_verdict = _confidence_verdict

from rag_sft.definitions import defs  # noqa: E402  (after the stand-in, which it must see)

__all__ = ["defs"]
