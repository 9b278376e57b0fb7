"""Published references: schema checks, `effbench profiles check` arithmetic and leave-one-out."""
from __future__ import annotations

import json

import pytest
from ebtest import run_cli

from effbench.devices.profile import validate_profile
from effbench.errors import UserError

TOY = {
    "id": "toy-npu", "name": "Toy NPU", "kind": "npu",
    "peak_ops": {"int8": {"dense": {"value": 4.0e12, "source": "test figure"}},
                 "fp32": {"dense": {"value": 1.0e11, "source": "test figure"}}},
    "memory": {"bandwidth_bytes_per_s": {"value": 1.0e10, "source": "test figure"}},
    "per_op_overhead_s": {"value": 1.0e-6, "source": "test figure"},
    "references": [
        {"model": "resnet8", "precision": "int8", "runtime": "toy", "latency_ms": 0.05,
         "source": "https://example.org/a", "quote": "ResNet-8 runs in 0.05 ms"},
        {"model": "resnet8", "precision": "fp32", "runtime": "toy", "latency_ms": 1.0,
         "source": "https://example.org/b", "quote": "ResNet-8 fp32 in 1 ms"},
        {"model": "resnet8", "batch": 4, "precision": "int8", "runtime": "toy", "throughput_ips": 20000,
         "scenario": "offline", "source": "https://example.org/c", "quote": "20000 images per second"}],
}


@pytest.mark.spawns
def test_check_projects_each_reference_and_leaves_one_out(tmp_path, cache_dir):
    import yaml
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(TOY))
    res = run_cli("profiles", "check", str(path), "--json", "--cache-dir", str(cache_dir))
    # the toy ships no derate although its references give one: the check finds that (exit 1) and says how
    assert res.returncode == 1, res.stderr
    assert "toy-npu: derate.compute: ships 1, the references give" in res.stderr and "set them" in res.stderr
    out = json.loads(res.stdout)
    checks = out["checks"]
    assert [c["published_ms_per_inference"] for c in checks] == pytest.approx([0.05, 1.0, 1000 / 20000])
    # resnet8 at batch 1: 12.5 M MACs; int8 at 4 TOP/s is compute 6.25 us, fp32 at 0.1 TFLOP/s 250 us
    assert checks[1]["projected_ms_per_inference"] > checks[0]["projected_ms_per_inference"] > 0.00625
    # the toy ships no derate: as shipped is uncalibrated; each reference is left out of a fit on the other two
    for c in checks:
        assert c["shipped_ms_per_inference"] == pytest.approx(c["projected_ms_per_inference"])
        assert c["loo_fitted_on"] == "own" and c["loo_ms_per_inference"] > 0
    fit = out["fits"]["toy-npu"]
    assert fit["basis"] == "own" and fit["references"] == 3 and fit["shipped_derate"] is None and not fit["matches"]
    # the fit moves the busy time only: the reference it was fitted without lands where that derate puts it
    assert out["summary"]["derates_differing"] == 1
    text = run_cli("profiles", "check", str(path), "--cache-dir", str(cache_dir)).stdout
    assert "leave-one-out of the least-squares fit that ships" in text and "9 of" not in text
    assert "3 of 3 references" in text and "DIFFERS" in text


@pytest.mark.parametrize("change,message", [
    ({"model": "resnet51"}, "unknown reference model 'resnet51'"),
    ({"throughput_ips": 5.0}, "exactly one of latency_ms and throughput_ips"),
    ({"precision": "int3"}, "unknown precision 'int3'"),
    ({"quote": ""}, "quote"),
])
def test_a_bad_reference_is_a_one_line_error(change, message):
    data = json.loads(json.dumps(TOY))
    data["references"][0].update(change)
    with pytest.raises(UserError, match=message):
        validate_profile(data, file="toy.yaml")


def test_shipped_references_name_their_source_and_quote_the_figure():
    import math
    import re

    from effbench.devices import load_profiles, shipped_ids

    def states(figure: float, quote: str) -> bool:
        """One of the quote's numbers (1,234.5 read as 1234.5) is the figure itself, not just its first digits."""
        numbers = [float(x.replace(",", "")) for x in re.findall(r"(?<![\d.])\d[\d,]*(?:\.\d+)?", quote)]
        return any(math.isclose(x, figure, rel_tol=1e-9) for x in numbers)
    # what the check tells apart: 12.4 ms is not 1.2 ms or 12 ms, 88,526 is 88526
    assert states(12.4, "| MobileNet v2 | 12.4ms | 1.8ms |") and not states(1.2, "| 12.4ms |")
    assert not states(12.0, "| 12.4ms |") and states(88526.0, "Samples per second: 88,526")
    refs = [(p.id, r) for p in load_profiles([i for i in shipped_ids() if i != "local"]) for r in p.references]
    assert refs
    for pid, r in refs:
        assert r.source.startswith(("http://", "https://")), (pid, r.source)
        figure = r.latency_ms if r.latency_ms is not None else r.throughput_ips
        assert states(figure, r.quote), (pid, figure, r.quote)  # the quote states it
        if r.power_w is not None:  # a published power names where it was read and quotes it
            assert r.power_source.startswith(("http://", "https://")), (pid, r.power_source)
            assert f"{r.power_w:.6e}"[:3].replace(".", "") in r.power_quote.replace(".", ""), (pid, r.power_quote)
