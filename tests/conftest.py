import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def tiny_backbones():
    """Tiny random CLIP, SAM and SAM2 directories in the transformers format (written once per process)."""
    from tests.helpers.tiny import shared_tiny_backbones

    return shared_tiny_backbones()
