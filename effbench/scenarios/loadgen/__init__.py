"""The four scenarios through MLPerf LoadGen: a system-under-test around a runner's pre-bound timed calls,
LoadGen run in PerformanceOnly mode, and every figure parsed from LoadGen's own summary and detail logs.

MLPerf-style runs, never MLPerf results: no audit, no accuracy run, no submission checker. The peak-rate
search (`find_max_qps`) drives server runs at candidate rates and lets LoadGen judge each one.
"""
from effbench.scenarios.loadgen.logs import parse_logs, read_detail, read_summary, trim_detail_log
from effbench.scenarios.loadgen.result import LoadGenResult, TokenFigures
from effbench.scenarios.loadgen.run import SUTError, run_loadgen, run_loadgen_tokens
from effbench.scenarios.loadgen.search import RateSearch, find_max_qps, rate_dir, server_runner
from effbench.scenarios.loadgen.settings import (
                                                 DEFAULT_PERCENTILE,
                                                 MLPERF_SEEDS,
                                                 MULTI_STREAM,
                                                 OFFLINE,
                                                 SCENARIOS,
                                                 SERVER,
                                                 SINGLE_STREAM,
                                                 Call,
                                                 Generate,
                                                 GenerateBatch,
                                                 LoadGenSettings,
)

__all__ = ["Call", "DEFAULT_PERCENTILE", "Generate", "GenerateBatch", "LoadGenResult", "LoadGenSettings", "MLPERF_SEEDS", "MULTI_STREAM",
           "OFFLINE", "RateSearch", "SCENARIOS", "SERVER", "SINGLE_STREAM", "SUTError", "TokenFigures", "find_max_qps",
           "parse_logs", "rate_dir", "read_detail", "read_summary", "run_loadgen", "run_loadgen_tokens",
           "server_runner", "trim_detail_log"]
