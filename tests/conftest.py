import os
import threading
import time
from contextlib import contextmanager
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


@contextmanager
def running_server(app):
    """Serve an ASGI app with uvicorn on a free loopback port for the duration of the block."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
