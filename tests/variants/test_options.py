import pytest

from effbench.variants import PRECISIONS, validate_options


def test_defaults_are_filled():
    assert validate_options("int8", {}) == {"per_channel": True, "calibration_samples": 256}
    assert validate_options("int4", {"block_size": 64}) == {"block_size": 64, "symmetric": True, "accuracy_level": 4}
    assert validate_options("binary", None) == {"keep_fp32": ["first", "last"]}
    assert validate_options("fp32", {"method": "x"}) == {}  # method is the suite's business


def test_unknown_option_names_the_close_one_and_the_list():
    with pytest.raises(ValueError, match=r"unknown option 'blocksize' for int4 \(did you mean 'block_size'\?\); "
                                         r"expected one of block_size, symmetric, accuracy_level"):
        validate_options("int4", {"blocksize": 32})
    with pytest.raises(ValueError, match="expected one of prune$"):  # the one option every precision takes
        validate_options("fp32", {"anything": 1})
    with pytest.raises(ValueError, match="expected one of plan, calibration_samples$"):  # a plan is not pruned
        validate_options("mixed", {"anything": 1})


@pytest.mark.parametrize("precision,options,msg", [
    ("int8", {"per_channel": "yes"}, "must be a bool"),
    ("int8", {"calibration_samples": True}, "must be a int"),
    ("int8", {"calibration_samples": 0}, "> 0"),
    ("int4", {"block_size": 48}, "power of two"),
    ("int4", {"block_size": 8}, "power of two"),
    ("binary", {"keep_fp32": "first"}, "must be a list"),
    ("binary", {"keep_fp32": [1]}, "layer names"),
    ("int3", {}, "unknown precision 'int3'"),
])
def test_bad_values(precision, options, msg):
    with pytest.raises(ValueError, match=msg):
        validate_options(precision, options)


@pytest.mark.spawns
def test_options_table_is_pure_python():
    import subprocess
    import sys
    assert set(PRECISIONS) == {"fp32", "fp16", "bf16", "int8", "int4", "binary", "ternary", "mixed"}
    # importing the table and validating must not import a runtime (suite.py calls it at load time)
    code = "import sys, effbench.variants as v; v.validate_options('int8', {}); print('onnxruntime' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
