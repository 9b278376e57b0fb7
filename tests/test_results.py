import json

import pytest
from ebrecords import make

from effbench.errors import UserError
from effbench.results.record import Record
from effbench.results.store import Store, load


def rec(cell_id="m/fp32/onnxruntime/b1/single-stream", rnd=0, rounds=1, samples=(1.0, 1.1, 0.9), status="ok"):
    lat = {"median": sorted(samples)[len(samples) // 2], "timing": "per-call", "block_size": 1, "calls": len(samples),
           "elapsed_s": 1.0, "unstable": False}
    return make(cell_id, status=status, round=rnd, rounds=rounds,
                latency_ms=lat if status == "ok" else None, samples_ms=list(samples) if status == "ok" else [],
                throughput_ips=100.0 + rnd, memory={"peak_rss_bytes": 100 + rnd})


def test_roundtrip(tmp_path):
    s = Store(tmp_path / "results.jsonl")
    r = rec()
    s.append(r)
    back, warnings = s.records()
    assert back == [r] and not warnings
    assert json.loads((tmp_path / "results.jsonl").read_text())["schema"] == "effbench.result/1"


def test_torn_last_line_is_reported_and_healed(tmp_path):
    path = tmp_path / "results.jsonl"
    s = Store(path)
    s.append(rec("a/fp32/onnxruntime/b1/single-stream"))
    with open(path, "a") as f:
        f.write('{"schema": "effbench.result/1", "cell_id": "b/fp')  # killed mid-write
    records, warnings = s.records()
    assert [r.cell_id for r in records] == ["a/fp32/onnxruntime/b1/single-stream"]
    assert len(warnings) == 1 and "killed" in warnings[0]
    s.append(rec("c/fp32/onnxruntime/b1/single-stream"))  # the next line starts on a line of its own
    records, _ = s.records()
    assert [r.cell_id for r in records] == ["a/fp32/onnxruntime/b1/single-stream", "c/fp32/onnxruntime/b1/single-stream"]


def test_foreign_line_is_a_user_error(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"hello": "world"}\n')
    with pytest.raises(UserError, match="not an effbench result record"):
        load(path)


def test_rounds_merge_into_one_record_with_round_medians(tmp_path):
    s = Store(tmp_path / "results.jsonl")
    s.append(rec(rnd=0, rounds=3, samples=(1.0, 1.0, 1.0)))
    s.append(rec(rnd=1, rounds=3, samples=(2.0, 2.0, 2.0)))
    s.append(rec(rnd=2, rounds=3, samples=(3.0, 3.0, 3.0)))
    res = load(tmp_path)
    assert len(res) == 1
    r = res.records[0]
    assert r.round_medians_ms == (1.0, 2.0, 3.0)
    assert r.latency_ms.n == 9 and r.latency_ms.median == 2.0
    assert r.memory.peak_rss_bytes == 102
    df = res.to_frame()
    assert df.loc[0, "latency_ms.median"] == 2.0


def test_paired_ratios_merge_only_when_every_round_has_one(tmp_path):
    s = Store(tmp_path / "a" / "results.jsonl")
    for i, q in enumerate((1.1, 1.2, 1.05)):
        s.append(rec(rnd=i, rounds=3).replace(paired_ratios=(q,)))
    assert load(tmp_path / "a").records[0].paired_ratios == (1.1, 1.2, 1.05)
    s = Store(tmp_path / "b" / "results.jsonl")
    for i in range(3):
        # the paired pass failed in round 2
        s.append(rec(rnd=i, rounds=3).replace(paired_ratios=(1.1,) if i != 1 else ()))
    assert load(tmp_path / "b").records[0].paired_ratios == ()   # never mis-paired with the rounds
    bad = {**rec().to_json(), "paired_ratios": ["fast"]}
    with pytest.raises(ValueError, match="paired_ratios"):
        Record.from_json(bad)


def test_missing_store_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such results store"):
        load(tmp_path / "nope.jsonl")


def test_unwritable_store_is_a_user_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        import os
        if os.access(ro, os.W_OK):  # root ignores permissions: use a path under a file instead
            target = tmp_path / "file"
            target.write_text("x")
            path = target / "results.jsonl"
        else:
            path = ro / "results.jsonl"
        with pytest.raises(UserError, match="cannot write results"):
            Store(path).append(rec())
    finally:
        ro.chmod(0o700)


def _prov(host: str, cpu: str, ort: str) -> dict:
    return {"python": "3.11.7", "effbench": "0.1.0", "packages": {"onnxruntime": ort, "numpy": "2.4.6"},
            "host": {"hostname": host, "cpu": cpu, "machine": "x86_64", "cores_logical": 2}}


def _mixed_store(folder, second=("vm-b", "AMD EPYC 9654", "1.31.0")):
    """Round 0 from this machine, round 1 from another (a --resume elsewhere): 0.5 ms vs 500 ms medians."""
    s = Store(folder / "results.jsonl")
    s.append(rec(rnd=0, rounds=2, samples=(0.5, 0.5, 0.5)).replace(
        provenance=Record.from_json({**rec().to_json(), "provenance": _prov("vm-a", "Intel Xeon", "1.32.0")}).provenance))
    s.append(rec(rnd=1, rounds=2, samples=(500.0, 500.0, 500.0)).replace(
        provenance=Record.from_json({**rec().to_json(), "provenance": _prov(*second)}).provenance))
    return folder


def test_rounds_of_another_machine_are_not_merged_unless_asked(tmp_path):
    """pyperf's rule: rounds whose machine or software differ are refused in one line (file, field, fix);
    --allow-mixed merges them and the record, the CSV and the report say what differed."""
    store = _mixed_store(tmp_path)
    with pytest.raises(UserError) as e:
        load(store)
    line = e.value.one_line()
    assert e.value.file == str(store / "results.jsonl") and e.value.field == "provenance.host.cpu"
    assert "m/fp32/onnxruntime/b1/single-stream: its rounds differ in host.cpu (Intel Xeon vs AMD EPYC 9654)" in line
    assert "--allow-mixed" in e.value.fix and "\n" not in line
    res = load(store, allow_mixed=True)
    r = res.records[0]
    assert r.round_medians_ms == (0.5, 500.0) and r.mixed == {
        "host.cpu": ["Intel Xeon", "AMD EPYC 9654"], "packages.onnxruntime": ["1.32.0", "1.31.0"],
        "host.hostname": ["vm-a", "vm-b"]}
    assert Record.from_json(r.to_json()).mixed == r.mixed  # stored and read back
    assert json.loads(res.to_frame().loc[0, "mixed"])["packages.onnxruntime"] == ["1.32.0", "1.31.0"]
    from effbench.report.overview import build_overview
    from effbench.report.table import build_rows
    rows = build_rows(res)
    assert rows[0].flags[-1] == "mixed: rounds differ in host.cpu, packages.onnxruntime"
    assert build_overview(res, rows).hosts == ["vm-a", "vm-b"]  # both machines named, not the last round's


def test_only_what_times_a_round_must_agree(tmp_path):
    """Another hostname on the same CPU and software (a fleet's nodes of one device) merges as one; so does
    a round whose older provenance lacks a field; one runtime version apart is refused."""
    same = load(_mixed_store(tmp_path / "a", ("vm-b", "Intel Xeon", "1.32.0"))).records[0]
    assert same.mixed is None and same.round_medians_ms == (0.5, 500.0)
    with pytest.raises(UserError, match=r"differ in packages\.onnxruntime \(1\.32\.0 vs 1\.31\.0\)"):
        load(_mixed_store(tmp_path / "b", ("vm-a", "Intel Xeon", "1.31.0")))
    s = Store(tmp_path / "c" / "results.jsonl")
    s.append(rec(rnd=0, rounds=2))  # an old store's round: no provenance recorded
    s.append(rec(rnd=1, rounds=2).replace(provenance=Record.from_json(
        {**rec().to_json(), "provenance": _prov("vm-a", "Intel Xeon", "1.32.0")}).provenance))
    assert load(tmp_path / "c").records[0].mixed is None


def test_report_and_compare_refuse_a_mixed_store_in_one_line_unless_asked(tmp_path, capsys):
    from effbench.cli.app import main
    store = _mixed_store(tmp_path / "s")
    for argv in (["report", str(store), "-o", str(tmp_path / "r")], ["compare", str(store), str(store)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "provenance.host.cpu" in err and "--allow-mixed" in err
    assert main(["report", str(store), "-o", str(tmp_path / "r"), "--allow-mixed"]) == 0
    md = (tmp_path / "r" / "summary.md").read_text()
    assert "Hosts: vm-a, vm-b." in md and "mixed: rounds differ in host.cpu, packages.onnxruntime" in md
    assert "packages.onnxruntime" in (tmp_path / "r" / "results.csv").read_text()
    assert main(["compare", str(store), str(store), "--allow-mixed"]) in (0, 1)
