"""The standard architectures published device figures use: their size and work match the papers'."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from effbench.config.suite import BUILTIN_MODELS
from effbench.models import zoo
from effbench.models.standard import STANDARD

# (parameters, multiply-accumulates) at batch 1, from the papers / MLPerf Tiny
PUBLISHED = {"resnet50": (25.56e6, 4.09e9), "mobilenet-v2": (3.50e6, 0.30e9), "mobilenet-v1": (4.23e6, 0.569e9),
             "resnet8": (78e3, 12.5e6)}


@pytest.mark.parametrize("name", sorted(STANDARD))
def test_parameters_and_macs_match_the_published_architecture(name):
    cls, inputs = STANDARD[name]
    model = cls().eval()
    x = torch.zeros(1, *inputs["x"]["shape"][1:])
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    params, macs = PUBLISHED[name]
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(params, rel=0.01)
    assert counter.get_total_flops() / 2 == pytest.approx(macs, rel=0.01)


def test_the_suite_knows_every_zoo_model():
    assert set(BUILTIN_MODELS) == set(zoo.ZOO)
