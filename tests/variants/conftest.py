from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent


def _prepare(name: str, shape: list, cache: Path):
    from effbench.config.suite import ModelSpec
    from effbench.models.sources import prepare
    spec = ModelSpec.model_validate({"id": f"tiny-{name}", "source": {"torch": f"tinynets:{name}"},
                                     "inputs": {"x": {"shape": shape, "dtype": "float32"}}})
    return prepare(spec, 0, base_dir=HERE, suite_file="tiny.yaml", cache_dir=cache)


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("effbench-cache")


@pytest.fixture(scope="session")
def mlp_artifact(cache):
    return _prepare("mlp", ["batch", 64], cache)


@pytest.fixture(scope="session")
def cnn_artifact(cache):
    return _prepare("cnn", ["batch", 1, 8, 8], cache)


@pytest.fixture(scope="session")
def calib_mlp():
    return {"x": np.random.default_rng(1).uniform(0, 1, (64, 64)).astype(np.float32)}


@pytest.fixture(scope="session")
def calib_cnn():
    return {"x": np.random.default_rng(1).uniform(0, 1, (64, 1, 8, 8)).astype(np.float32)}
