"""The reports' Generation section (cells with a `generation` record section, `task: generate`): TTFT and
TPOT per precision x runtime with their CIs and paired speedups vs FP32, decode tokens/s against prompt
length, KV cache bytes against context (analytic lines, measured points), quality against speed, energy
per token. One table for the HTML and the Markdown; the charts are the HTML's.
"""
from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

from effbench.report.figures import DASHES, PALETTE, base_layout, colour_map, esc, sig, variant_sort_key
from effbench.report.table import Row
from effbench.units import fmt_bytes, fmt_si
from effbench.variants import reference_precision

COLUMNS = ("model", "runner", "precision", "prompt", "TTFT ms (95% CI)", "TPOT ms (95% CI)",
           "decode tokens/s (95% CI)", "TTFT speedup", "TPOT speedup", "tokens/s speedup", "ITL p50/p99 ms",
           "KV bytes analytic / measured", "weights", "BW utilization", "kernel", "agreement / KL / ppl",
           "J per output token")


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _sorted(rows) -> list[Row]:
    return sorted(rows, key=lambda r: (r.model, r.runner, variant_sort_key(r.variant),
                                       r.record.generation.prompt_tokens, r.record.cell.scenario))


def generative(rows: Sequence[Row]) -> list[Row]:
    """The single-stream generative cells (one request at a time, the per-token figures)."""
    return _sorted(r for r in rows if r.record.generation is not None and not _under_load(r))


def under_load(rows: Sequence[Row]) -> list[Row]:
    """The generative cells run through LoadGen's offline or server scenario."""
    return _sorted(r for r in rows if r.record.generation is not None and _under_load(r))


def _under_load(r: Row) -> bool:
    return r.record.server is not None or r.record.offline is not None


def has_generation(rows: Sequence[Row]) -> bool:
    return any(r.record.generation is not None for r in rows)


def _ci(value: float | None, ci: tuple[float, float] | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    text = f"{value:.{digits}g}"
    return text + (f" [{ci[0]:.{digits - 1}g}, {ci[1]:.{digits - 1}g}]" if ci else "")


def _speedup(g, figure: str) -> str:
    c = g.speedup_vs_fp32.get(figure)
    if not c:
        return "—"
    if c.get("speedup") is None:
        return f"— ({c.get('reason') or 'not paired'})"
    ci = c.get("ci")
    text = f"{c['speedup']:.3g}×" + (f" [{ci[0]:.3g}–{ci[1]:.3g}]" if ci else "")
    return text + (" ~" if ci and ci[0] <= 1 <= ci[1] else "")


def _quality(g) -> str:
    q = g.quality
    if not q:
        return "reference (FP32)" if g.kernel.get("precision") == reference_precision() else "—"
    if q.get("next_token_agreement") is None:
        if q.get("note") and q.get("perplexity") is not None:
            return f"reference (FP32); ppl {q['perplexity']:.4g}"
        return "reference (FP32)" if q.get("note") else f"— ({q.get('reason', 'not scored')})"
    text = f"{q['next_token_agreement']:.1%} / {q['kl_mean']:.3g}"
    if q.get("perplexity") is not None:
        text += f" / {q['perplexity']:.4g} (FP32 {q.get('reference_perplexity') or 0:.4g})"
    return text


def cells(r: Row) -> list[str]:
    """One generative cell as display strings (the HTML and Markdown tables share them)."""
    g = r.record.generation
    kv = f"{fmt_bytes(g.kv_cache_bytes_analytic)} / {fmt_bytes(g.kv_cache_bytes_measured)}"
    itl = g.itl_ms or {}
    itl_text = (f"{itl['p50']:.3g} / {itl['p99']:.3g}" if "p50" in itl and "p99" in itl else "—")
    bw = "—" if g.bandwidth_utilization is None else (
        f"{g.bandwidth_utilization:.0%} of {fmt_si(g.bandwidth_bytes_per_s, 'B/s')}")
    kernel = f"{g.kernel.get('quantization', '?')}: {g.kernel.get('weights', '?')}"
    dynamic = g.extra.get("dynamic_j_per_output_token")
    energy = (fmt_si(g.j_per_output_token, "J") + f" ({g.energy_source})" if g.j_per_output_token is not None
              else f"— (dynamic part only: {fmt_si(dynamic, 'J')}, modeled:local)" if dynamic is not None
              else "— (" + (g.energy_reason or "not given").split(";")[0] + ")")
    return [r.model, r.runner, r.variant, str(g.prompt_tokens), _ci(g.ttft_ms, g.ttft_ms_ci),
            _ci(g.tpot_ms, g.tpot_ms_ci), _ci(g.decode_tokens_per_s, g.decode_tokens_per_s_ci),
            _speedup(g, "ttft_ms"), _speedup(g, "tpot_ms"), _speedup(g, "decode_tokens_per_s"), itl_text, kv,
            fmt_bytes(g.weight_bytes), bw, kernel, _quality(g), energy]


NOTE = ("One request at a time: a fixed prompt (token ids), the output length forced (greedy, EOS ignored), a fresh "
        "KV cache. TTFT = request in to first output token (prefill included); TPOT = (end-to-end - TTFT) / "
        "(new tokens - 1); ITL pooled over a round's tokens. The precisions of one model and runtime alternate "
        "request by request (ABBA) in one worker; rounds are fresh workers; CIs are over rounds, and a speedup "
        "is paired (FP32 / variant for times, variant / FP32 for tokens/s); `~`: its CI contains 1×. Bandwidth "
        "utilization = decode tokens/s / (measured copy bandwidth / bytes one decode step reads). Quality is "
        "teacher-forced against the same runtime's FP32 on held text; perplexity only for real weights.")


LOAD_COLUMNS = ("model", "runner", "precision", "prompt", "scenario", "throughput (95% CI over rounds)",
                "TTFT / TPOT at the percentile (bound)", "paired vs FP32", "LoadGen's verdict per rate", "serving")
LOAD_NOTE = ("Through MLPerf LoadGen with token latencies (MLPerf-style, not MLPerf results): the session reports "
             "its first token to LoadGen as it comes out (FirstTokenComplete) and the token count at the end. Server "
             "(MLPerf's LLM form): Poisson arrivals, TTFT from the scheduled arrival (queueing included), the highest "
             "rate at which TTFT and TPOT at the percentile stay within their bounds, every rate judged by LoadGen. "
             "Offline: output tokens/s over LoadGen's one query of many requests. Every runtime here serves one "
             "request at a time; the others queue.")


def load_cells(r: Row) -> list[str]:
    """One generative offline or server cell as display strings."""
    rec, g = r.record, r.record.generation
    serving = str(g.extra.get("serving") or "—")
    if rec.server is not None:
        s = rec.server
        ci = f" [{s.max_qps_ci[0]:.3g}, {s.max_qps_ci[1]:.3g}]" if s.max_qps_ci else ""
        tput = (f"{s.max_qps:.3g}{ci} requests/s = {s.max_qps * g.new_tokens:.3g} output tokens/s offered"
                if s.max_qps else f"none: {s.reason or s.search or 'no rate met the bounds'}")
        key = f"p{s.percentile:g}"
        tok = s.tokens or {}
        ttft, tpot = (tok.get("ttft_ms") or {}).get(key), (tok.get("tpot_ms") or {}).get(key)
        at = (f"{key} TTFT {_num(ttft)} ms (≤ {s.latency_bound_ms:g}) / TPOT {_num(tpot)} ms "
              f"(≤ {_num(s.tpot_bound_ms)})" + ("" if s.max_qps else " at the lowest rate"))
        rates = ", ".join(f"{p.get('qps', 0):.3g} {'VALID' if p.get('valid') else 'INVALID'}" for p in s.probes[:12])
        paired = "— (each precision's own search)"
        scenario = "server"
    else:
        o = rec.offline
        per_token = g.new_tokens
        ci = f" [{o.ci[0] * per_token:.4g}, {o.ci[1] * per_token:.4g}]" if o.ci else ""
        batch = f" at batch {o.batch_size}" if o.batch_size else ""
        tput = (f"{o.samples_per_s * per_token:.4g}{ci} output tokens/s ({o.samples_per_s:.3g} requests/s){batch}"
                if o.samples_per_s else "—")
        sweep = [x for x in o.extra.get("batch_sweep") or [] if x.get("output_tokens_per_s")]
        if len(sweep) > 1:
            tput += "; sweep " + ", ".join(f"b{x['batch']} {x['output_tokens_per_s']:.4g}" for x in sweep)
        cannot = o.extra.get("batch_unsupported") or {}
        if cannot:
            tput += "; " + "; ".join(f"b{b} unsupported: {why}" for b, why in cannot.items())
        svc = g.extra.get("service_tpot_ms")
        at = f"TPOT {_num(svc)} ms (the session's own stamps; offline has no bound)"
        lg = o.extra.get("loadgen") or {}
        rates = ", ".join("VALID" if x.get("valid") else "INVALID" for x in lg.get("runs", [])) or "—"
        paired = _speedup(g, "output_tokens_per_s")
        scenario = "offline"
    return [r.model, r.runner, r.variant, str(g.prompt_tokens), scenario, tput, at, paired, rates, serving]


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


PROJECTION_NOTE = ("Projected onto the device profiles (modelled, never measured there): TTFT = the prompt's MACs at "
                   "the kernel's arithmetic peak (or its weights at the bandwidth, whichever is longer), TPOT = the "
                   "bytes one decode step reads at the bandwidth (or its MACs at the peak), each plus one forward's "
                   "overhead; the band is the profile's, fitted on CNN references. On `local` the error against the "
                   "measured TTFT / TPOT follows.")


def _projection_profiles(gen: list[Row]) -> list[str]:
    return sorted({pid for r in gen for pid, p in (r.record.projections or {}).items() if p.extra.get("tpot_ms")})


def projection_cell(r: Row, pid: str) -> str:
    """One cell's projected TTFT / TPOT on one profile (with the error against the local measurement)."""
    p = (r.record.projections or {}).get(pid)
    if p is None:
        return "—"
    x = p.extra
    if p.status != "ok" or not x.get("tpot_ms"):
        return f"— ({(p.reason or p.status).split(';')[0]})"
    text = f"{x['ttft_ms']:.3g} / {x['tpot_ms']:.3g}"
    if "tpot_error_pct" in x:
        text += f" (err {x.get('ttft_error_pct', 0):+.0f}% / {x['tpot_error_pct']:+.0f}%)"
    return text


def markdown(rows: Sequence[Row], md_cell: Callable[[object], str]) -> str:
    """The Markdown section; `md_cell`: the summary's escaping of a table cell (`report.markdown`)."""
    gen, load = generative(rows), under_load(rows)
    if not gen and not load:
        return ""
    out = ["## Generation", ""]
    if gen:
        out += [md_cell(NOTE), ""]
        refs = sorted({r.record.generation.reference for r in gen if r.record.generation.reference})
        if refs:
            out += ["FP32 reference: " + "; ".join(md_cell(x) for x in refs) + ".", ""]
        out.append("| " + " | ".join(COLUMNS) + " |")
        out.append("|" + "|".join("---" for _ in COLUMNS) + "|")
        for r in gen:
            out.append("| " + " | ".join(md_cell(x) for x in cells(r)) + " |")
    profiles = _projection_profiles(gen)
    if profiles:
        out += ["", "### TTFT / TPOT ms projected onto device profiles", "", md_cell(PROJECTION_NOTE), ""]
        out.append("| cell | " + " | ".join(profiles) + " |")
        out.append("|---|" + "|".join("---" for _ in profiles) + "|")
        for r in gen:
            out.append("| " + " | ".join(md_cell(x) for x in [r.cell_id, *(projection_cell(r, p) for p in profiles)])
                       + " |")
    if load:
        out += ["", "### Generation under load", "", md_cell(LOAD_NOTE), ""]
        out.append("| " + " | ".join(LOAD_COLUMNS) + " |")
        out.append("|" + "|".join("---" for _ in LOAD_COLUMNS) + "|")
        for r in load:
            out.append("| " + " | ".join(md_cell(x) for x in load_cells(r)) + " |")
    return "\n".join(out)


def _projection_html(gen: list[Row]) -> str:
    profiles = _projection_profiles(gen)
    if not profiles:
        return ""
    head = "<th>cell</th>" + "".join(f"<th>{_e(p)}</th>" for p in profiles)
    body = "".join("<tr>" + f"<td>{_e(r.cell_id)}</td>" + "".join(f"<td>{_e(projection_cell(r, p))}</td>"
                                                                  for p in profiles) + "</tr>" for r in gen)
    return (f'<h3>TTFT / TPOT ms projected onto device profiles</h3><p class="muted">{_e(PROJECTION_NOTE)}</p>'
            f'<div class="table-wrap"><table class="data"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            "</table></div>")


def _load_html(load: list[Row]) -> str:
    if not load:
        return ""
    head = "".join(f"<th>{_e(c)}</th>" for c in LOAD_COLUMNS) + "<th>LoadGen logs</th>"
    body = []
    for r in load:
        sec = r.record.server or r.record.offline
        lg = sec.extra.get("loadgen") or {}
        links = " ".join(f'<a href="{_e(lg[k])}">{k}</a>' for k in ("summary", "detail") if lg.get(k))
        body.append("<tr>" + "".join(f"<td>{_e(x)}</td>" for x in load_cells(r)) + f"<td>{links}</td></tr>")
    return (f'<h3>Generation under load</h3><p class="muted">{_e(LOAD_NOTE)}</p><div class="table-wrap">'
            f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def section(rows: Sequence[Row], figs: dict[str, Any]) -> str:
    """The HTML's Generation section (empty without generative cells)."""
    gen, load = generative(rows), under_load(rows)
    if not gen:
        return f'<section id="generation"><h2>Generation</h2>{_load_html(load)}</section>' if load else ""
    colours = colour_map(gen)
    parts = []
    for mi, model in enumerate(sorted({r.model for r in gen})):
        mine = [r for r in gen if r.model == model]
        for kind, build, title in (("times", _times_figure, "TTFT and TPOT per precision x runtime"),
                                   ("prompt", _prompt_figure, "decode tokens/s against prompt length"),
                                   ("kv", _kv_figure, "KV cache bytes against context"),
                                   ("quality", _quality_figure, "quality against speed")):
            fig = build(mine, colours)
            if fig is not None:
                fid = f"fig-gen-{kind}-{mi}"
                figs[fid] = fig
                parts.append(f'<h3>{_e(model)} — {_e(title)}</h3><div class="chart" id="{fid}"></div>')
    head = "".join(f"<th>{_e(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{_e(x)}</td>" for x in cells(r)) + "</tr>" for r in gen)
    refs = sorted({r.record.generation.reference for r in gen if r.record.generation.reference})
    ref = f'<p class="muted">FP32 reference: {_e("; ".join(refs))}.</p>' if refs else ""
    return f"""<section id="generation"><h2>Generation</h2>
<p class="muted">{_e(NOTE)}</p>{ref}
{"".join(parts)}
<div class="table-wrap"><table class="data"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>
{_projection_html(gen)}{_load_html(load)}
</section>"""


def _err(value: float, ci: tuple[float, float] | None) -> tuple[float, float]:
    return (sig(ci[1] - value), sig(value - ci[0])) if ci else (0.0, 0.0)


def _times_figure(rows: list[Row], colours: dict[str, str]) -> dict[str, Any] | None:
    """TTFT and TPOT bars per runtime x precision at each prompt length, with their CIs over rounds."""
    ok = [r for r in rows if r.record.generation.ttft_ms is not None]
    if not ok:
        return None
    traces = []
    for axis, figure, ci_key in (("y", "ttft_ms", "ttft_ms_ci"), ("y2", "tpot_ms", "tpot_ms_ci")):
        for v in sorted({r.variant for r in ok}, key=variant_sort_key):
            mine = [r for r in ok if r.variant == v and getattr(r.record.generation, figure) is not None]
            if not mine:
                continue
            vals = [getattr(r.record.generation, figure) for r in mine]
            errs = [_err(x, getattr(r.record.generation, ci_key)) for x, r in zip(vals, mine)]
            traces.append({"type": "bar", "name": esc(v), "legendgroup": esc(v), "showlegend": axis == "y",
                           "x": [esc(f"{r.runner} p{r.record.generation.prompt_tokens}") for r in mine],
                           "y": [sig(x) for x in vals], "yaxis": axis, "xaxis": "x" if axis == "y" else "x2",
                           "marker": {"color": colours.get(v, PALETTE[0])},
                           "error_y": {"type": "data", "symmetric": False, "array": [e[0] for e in errs],
                                       "arrayminus": [e[1] for e in errs]},
                           "hovertext": [esc(f"{r.cell_id}: {figure} {x:.4g}") for r, x in zip(mine, vals)],
                           "hoverinfo": "text"})
    layout = base_layout(460)
    layout.update({"barmode": "group", "grid": {"rows": 2, "columns": 1, "pattern": "independent"},
                   "yaxis": {"title": {"text": "TTFT ms"}, "rangemode": "tozero"},
                   "yaxis2": {"title": {"text": "TPOT ms"}, "rangemode": "tozero"},
                   "xaxis": {"type": "category"}, "xaxis2": {"type": "category"}})
    return {"data": traces, "layout": layout}


def _prompt_figure(rows: list[Row], colours: dict[str, str]) -> dict[str, Any] | None:
    """Decode tokens/s against prompt length: one line per runtime (dash) and precision (colour)."""
    ok = [r for r in rows if r.record.generation.decode_tokens_per_s is not None]
    if not ok:
        return None
    runners = sorted({r.runner for r in ok})
    traces = []
    for v in sorted({r.variant for r in ok}, key=variant_sort_key):
        for i, rn in enumerate(runners):
            mine = sorted((r for r in ok if r.variant == v and r.runner == rn),
                          key=lambda r: r.record.generation.prompt_tokens)
            if not mine:
                continue
            vals = [r.record.generation.decode_tokens_per_s for r in mine]
            errs = [_err(x, r.record.generation.decode_tokens_per_s_ci) for x, r in zip(vals, mine)]
            traces.append({"type": "scatter", "mode": "lines+markers", "name": esc(f"{v} · {rn}"),
                           "x": [r.record.generation.prompt_tokens for r in mine], "y": [sig(x) for x in vals],
                           "line": {"color": colours.get(v, PALETTE[0]), "dash": DASHES[i % len(DASHES)]},
                           "error_y": {"type": "data", "symmetric": False, "array": [e[0] for e in errs],
                                       "arrayminus": [e[1] for e in errs]},
                           "hovertext": [esc(f"{r.cell_id}: {x:.4g} tokens/s") for r, x in zip(mine, vals)],
                           "hoverinfo": "text"})
    layout = base_layout(400)
    layout["legend"] = {"title": {"text": "precision · runner"}}
    layout["xaxis"] = {"title": {"text": "prompt tokens"}, "type": "log"}
    layout["yaxis"] = {"title": {"text": "decode tokens/s (95% CI over rounds)"}, "rangemode": "tozero"}
    return {"data": traces, "layout": layout}


def _kv_figure(rows: list[Row], colours: dict[str, str]) -> dict[str, Any] | None:
    """The analytic KV size as a line over context for each bytes-per-element the cells used, and each
    cell's measured bytes as a point at its context."""
    ok = [r for r in rows if r.record.generation.kv_cache_bytes_analytic and r.record.generation.kv_context_tokens]
    if not ok:
        return None
    traces = []
    lines: dict[float, float] = {}      # bytes per token of context, by KV element type
    for r in ok:
        g = r.record.generation
        lines[g.kernel.get("kv_bytes_per_element") or 0] = g.kv_cache_bytes_analytic / g.kv_context_tokens
    top = max(r.record.generation.kv_context_tokens for r in ok) * 2
    xs = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
    xs = [x for x in xs if x <= top] or [top]
    for i, (bpe, per_token) in enumerate(sorted(lines.items())):
        traces.append({"type": "scatter", "mode": "lines", "name": esc(f"analytic, {bpe:g} B/element"),
                       "x": xs, "y": [sig(per_token * x) for x in xs],
                       "line": {"color": "#888888", "dash": DASHES[i % len(DASHES)]}})
    measured = [r for r in ok if r.record.generation.kv_cache_bytes_measured]
    for v in sorted({r.variant for r in measured}, key=variant_sort_key):
        mine = [r for r in measured if r.variant == v]
        traces.append({"type": "scatter", "mode": "markers", "name": esc(f"measured {v}"),
                       "x": [r.record.generation.kv_context_tokens for r in mine],
                       "y": [r.record.generation.kv_cache_bytes_measured for r in mine],
                       "marker": {"color": colours.get(v, PALETTE[0]), "size": 9},
                       "hovertext": [esc(f"{r.cell_id}: {r.record.generation.kv_cache_bytes_measured} bytes "
                                         f"({r.record.generation.kv_measured})") for r in mine],
                       "hoverinfo": "text"})
    layout = base_layout(380)
    layout["legend"] = {"title": {"text": "KV cache"}}
    layout["xaxis"] = {"title": {"text": "context tokens (prompt + new)"}, "type": "log"}
    layout["yaxis"] = {"title": {"text": "bytes"}, "type": "log"}
    return {"data": traces, "layout": layout}


def _quality_figure(rows: list[Row], colours: dict[str, str]) -> dict[str, Any] | None:
    """Next-token agreement with FP32 against decode tokens/s (the largest prompt of each cell)."""
    ok = [r for r in rows if r.record.generation.quality and r.record.generation.quality.get("next_token_agreement")
          is not None and r.record.generation.decode_tokens_per_s]
    if not ok:
        return None
    traces = []
    for v in sorted({r.variant for r in ok}, key=variant_sort_key):
        mine = [r for r in ok if r.variant == v]
        traces.append({"type": "scatter", "mode": "markers", "name": esc(v),
                       "x": [sig(r.record.generation.decode_tokens_per_s) for r in mine],
                       "y": [r.record.generation.quality["next_token_agreement"] for r in mine],
                       "marker": {"color": colours.get(v, PALETTE[0]), "size": 9},
                       "hovertext": [esc(f"{r.cell_id}: agreement {r.record.generation.quality['next_token_agreement']:.1%}, "
                                         f"KL {r.record.generation.quality['kl_mean']:.3g}") for r in mine],
                       "hoverinfo": "text"})
    layout = base_layout(380)
    layout["xaxis"] = {"title": {"text": "decode tokens/s"}}
    layout["yaxis"] = {"title": {"text": "next-token agreement with FP32"}, "range": [0, 1.02]}
    return {"data": traces, "layout": layout}
