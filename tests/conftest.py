import pytest
import torch

# One intra-op thread: the tests use tiny tensors, where OpenMP's thread hand-offs dominate
# (measured 20-40x slower DIP/FFT tests with 2 threads on a busy 2-core machine).
torch.set_num_threads(1)

HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def rng() -> torch.Generator:
    """A seeded CPU generator: tests never touch the global RNG."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)
