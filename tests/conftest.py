import os
from pathlib import Path

import pytest
import torch

# Two cores: one intra-op thread per test process keeps parallel helpers and CI predictable.
torch.set_num_threads(int(os.environ.get("MIMO_TEST_THREADS", "1")))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real benchmark files in ../shared/data; tests that need them skip where CI lacks them."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark data not found at {SHARED_DATA} (../shared beside the clone)")
    return SHARED_DATA
