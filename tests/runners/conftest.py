from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_mlp(tmp_path_factory):
    from effbench.config.suite import ModelSpec
    from effbench.models.sources import prepare
    spec = ModelSpec.model_validate({"id": "tiny-mlp", "source": {"torch": "tinynets:mlp"},
                                     "inputs": {"x": {"shape": ["batch", 64], "dtype": "float32"}}})
    cache = tmp_path_factory.mktemp("runner-cache")
    return prepare(spec, 0, base_dir=Path(__file__).parents[1] / "variants", suite_file="t.yaml", cache_dir=cache), cache
