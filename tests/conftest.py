import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: none is visible (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none: GPU tests are SKIPPED"
    return [f"stylecam: torch {torch.__version__}, CUDA device: {gpu}"]


@pytest.fixture(scope="session")
def hed_weights():
    from engines.weights import load_hed_weights
    return load_hed_weights()


@pytest.fixture(scope="session")
def portrait_bgr():
    """A real portrait photo that ships with matplotlib (Grace Hopper, public domain)."""
    import cv2
    from matplotlib import cbook
    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    img = cv2.imread(str(path))
    assert img is not None
    return img


@pytest.fixture(scope="session")
def threads():
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
