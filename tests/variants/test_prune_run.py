"""Issue 16 end to end: pruned variants run like every other variant (paired speedup, quality against the
real FP32, work counted on the pruned graph) and the report draws them against their pruning level."""
import json

import pytest


@pytest.mark.slow
def test_a_suite_with_pruned_variants_runs_end_to_end(tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    from effbench.cli.app import main
    shutil.copy(Path(__file__).parent / "tinynets.py", tmp_path / "tinynets.py")
    suite = tmp_path / "prune.yaml"
    suite.write_text("name: prune\nmodels:\n  - id: mlp\n    source: {torch: 'tinynets:mlp'}\n"
                     "    inputs: {x: {shape: [batch, 64], dtype: float32}}\n"
                     "precisions: [fp32, {fp32: {prune: {method: magnitude, amount: 0.5}}},\n"
                     "             {fp32: {prune: {method: channel, amount: 0.5}}}]\n"
                     "runners: [{name: onnxruntime, threads: 1}]\nbatch_sizes: [4]\ndevices: [local]\n"
                     "measure: {warmup_s: 0.02, min_time_s: 0.05, max_time_s: 0.2, rounds: 1}\n")
    out = tmp_path / "out"
    assert main(["run", str(suite), "-o", str(out), "--no-progress", "--cache-dir", str(tmp_path / "cache")]) == 0
    recs = {}
    for line in (out / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        recs[r["cell"]["variant"]] = r
    assert set(recs) == {"fp32", "fp32+magnitude50", "fp32+channel50"}
    assert all(r["status"] == "ok" for r in recs.values()), {k: r["reason"] for k, r in recs.items()}
    fp32, mag, ch = recs["fp32"], recs["fp32+magnitude50"], recs["fp32+channel50"]
    for r in (mag, ch):
        # scored against the real FP32 (a pruned FP32 variant is not the reference)
        assert r["quality"]["fp32_value"] == fp32["quality"]["value"]
        assert r["quality"]["fidelity"]["max_abs_err"] > 0
        assert r["comparison"]["method"] == "paired" and r["comparison"]["speedup"] > 0
        assert r["cell"]["precision"] == "fp32"
    assert mag["variant"]["sparsity"]["sparse_kernels"] is False
    assert abs(mag["variant"]["sparsity"]["overall"] - 0.5) <= 0.01
    ms = mag["model_stats"]
    assert ms["macs"] == fp32["model_stats"]["macs"] and abs(ms["effective_macs"] / ms["macs"] - 0.5) < 0.01
    assert ch["model_stats"]["macs"] < 0.6 * fp32["model_stats"]["macs"]
    assert ch["model_stats"]["params"] < fp32["model_stats"]["params"]
    assert ch["variant"]["pruning"]["layers"] and ch["variant"]["size_bytes"] < fp32["variant"]["size_bytes"]
    html = (out / "index.html").read_text()
    assert "fig-pruning-0" in html and "magnitude" in html
