import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # the tests run in parallel processes (-n 2): one thread each

import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_backbones():
    """Tiny random CLIP, SAM and SAM2 directories in the transformers format (written once per process)."""
    from tests.helpers.tiny import shared_tiny_backbones

    return shared_tiny_backbones()


@pytest.fixture
def standin(monkeypatch):
    """A per-pixel stand-in model that ``aeroseg predict`` loads instead of any checkpoint."""
    import aeroseg.registry
    from tests.test_inference import PixelModel

    model = PixelModel()
    monkeypatch.setattr(aeroseg.registry, "segmenter", lambda request, device: model)
    return model
