import subprocess
import sys

import pytest

from rag_sft.core.invariants import BrokenInvariant, require


def test_a_broken_invariant_raises_with_its_message():
    require(True, "never shown")
    with pytest.raises(BrokenInvariant, match="read 3 != accepted 2"):
        require(False, "read 3 != accepted 2")


def test_invariants_hold_under_python_optimizations():
    done = subprocess.run(
        [sys.executable, "-O", "-c", "from rag_sft.core.invariants import require; require(1 == 2, 'counts differ')"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and "BrokenInvariant: counts differ" in done.stderr
