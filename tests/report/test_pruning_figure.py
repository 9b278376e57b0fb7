"""Issue 16: the report draws pruned variants' quality and latency against their pruning level, by method."""
import plotly.graph_objects as go
from ebrecords import make

from effbench.report import figures
from effbench.report.table import build_rows
from effbench.results.store import Results


def _rec(variant: str, quality: float, median: float, **sections):
    return make(f"cnn/{variant}/onnxruntime/b1/single-stream", cell={"precision": "fp32"},
                latency_ms={"median": median}, quality={"metric": "top1", "value": quality},
                model_stats={"macs": 1000, "effective_macs": 500 if "sparsity" in sections else 1000},
                variant={"label": variant, "precision": "fp32", **sections})


def test_pruning_level_figure_has_one_line_per_method_from_the_unpruned_variant():
    recs = [_rec("fp32", 0.99, 1.0), _rec("ternary", 0.97, 1.0),
            _rec("fp32+channel30", 0.97, 0.8, pruning={"method": "channel", "amount": 0.3, "layers": {"c": {}},
                                                        "params_removed": 0.5}),
            _rec("fp32+channel50", 0.88, 0.6, pruning={"method": "channel", "amount": 0.5, "layers": {"c": {}}}),
            _rec("fp32+magnitude50", 0.96, 1.0, sparsity={"method": "magnitude", "amount": 0.5, "overall": 0.5,
                                                           "sparse_kernels": False})]
    rows = build_rows(Results(recs))
    fig = figures.pruning_figure(rows, multi_host=False)
    go.Figure(fig)  # a valid plotly figure
    lines = {t["name"]: t for t in fig["data"] if t["yaxis"] == "y"}
    assert set(lines) == {"channel · fp32 · onnxruntime", "magnitude · fp32 · onnxruntime"}
    assert lines["channel · fp32 · onnxruntime"]["x"] == [0.0, 0.3, 0.5]   # FP32 itself at 0
    assert lines["channel · fp32 · onnxruntime"]["y"] == [0.99, 0.97, 0.88]
    hover = figures.hover_text(next(r for r in rows if r.variant == "fp32+magnitude50"))
    assert "50.0% of the weights zero (dense kernels)" in hover and "effective MACs 500" in hover
    assert figures.pruning_figure(build_rows(Results(recs[:2])), multi_host=False) is None  # nothing pruned
