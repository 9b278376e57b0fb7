"""Datasets for quality passes and realistic timing inputs: builtin `digits` and `npz` files."""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effbench.errors import UserError


@dataclass(frozen=True)
class Dataset:
    name: str
    inputs: dict[str, np.ndarray]     # input name -> array with the samples on axis 0
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def take(self, index: np.ndarray, part: str) -> Dataset:
        return Dataset(f"{self.name} ({part})", {k: np.ascontiguousarray(v[index]) for k, v in self.inputs.items()},
                       None if self.labels is None else np.ascontiguousarray(self.labels[index]))

    def split(self, calibration: float, seed: int) -> DatasetSplit:
        """Two disjoint parts drawn by a seeded permutation: `calibration` (that fraction of the samples, at
        least one) for the variants that calibrate, and `evaluation` (the rest, at least one) for quality.
        A variant is never scored on the samples it was calibrated on."""
        n = len(self)
        if n < 2:
            raise ValueError(f"the dataset has {n} sample: a calibration part and an evaluation part need 2 or more")
        order = np.random.default_rng(seed).permutation(n)
        k = min(max(int(round(n * calibration)), 1), n - 1)
        return DatasetSplit(calibration=self.take(np.sort(order[:k]), "calibration"),
                            evaluation=self.take(np.sort(order[k:]), "evaluation"), seed=seed, fraction=calibration)


@dataclass(frozen=True)
class DatasetSplit:
    """A dataset's calibration and evaluation parts (`Dataset.split`); they share no sample."""

    calibration: Dataset
    evaluation: Dataset
    seed: int
    fraction: float

    def describe(self) -> dict:
        """What a record says about the split: its seed and the parts' sizes."""
        return {"seed": self.seed, "calibration_fraction": self.fraction,
                "calibration_samples": len(self.calibration), "evaluation_samples": len(self.evaluation),
                "overlap": 0}


def _fit(arr: np.ndarray, sample_shape: list[int], dtype: str, *, file: str | None, field: str,
         what: str) -> np.ndarray:
    """Reshape a dataset's per-sample arrays onto the model input's per-sample shape."""
    if arr.dtype.kind not in "biuf":  # complex would lose its imaginary part, datetimes become numbers
        raise UserError(f"{what} has dtype {arr.dtype}, not numbers", file=file, field=field,
                        fix=f"store the arrays as {dtype}")
    want = int(np.prod(sample_shape)) if sample_shape else 1
    have = int(np.prod(arr.shape[1:])) if arr.ndim > 1 else 1
    if have != want:
        raise UserError(f"{what} samples have shape {list(arr.shape[1:])} but the model input takes "
                        f"{sample_shape} per sample", file=file, field=field,
                        fix="give arrays whose per-sample shape matches the model's inputs")
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.ascontiguousarray(arr.reshape(len(arr), *sample_shape).astype(dtype, copy=False))
    except (TypeError, ValueError) as e:
        raise UserError(f"{what} cannot be read as {dtype}: {e}", file=file, field=field,
                        fix=f"store the arrays as {dtype}") from None
    if out.dtype.kind == "f" and not np.isfinite(out).all():  # NaN in, NaN quality out
        raise UserError(f"{what} holds NaN or infinite values (as {dtype})", file=file, field=field,
                        fix="clean the data, or store values that fit the input's dtype")
    return out


def load_dataset(spec, input_shapes: dict[str, tuple[list[int], str]], *, base_dir: Path,
                 suite_file: str | None, field: str) -> Dataset:
    """spec: suite DatasetSpec; input_shapes: input name -> (per-sample shape, dtype)."""
    if spec.builtin == "digits":
        from effbench.models.zoo import digits_split
        _, _, x, y = digits_split()
        if len(input_shapes) != 1:
            raise UserError("the digits dataset feeds a model with one input", file=suite_file, field=field,
                            fix="use an npz dataset with one array per input")
        (name, (shape, dtype)), = input_shapes.items()
        return Dataset("digits", {name: _fit(x, shape, dtype, file=suite_file, field=field, what="digits")}, y)
    path = base_dir / spec.npz
    fname = str(path)
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):  # a .npy array (or its memory map) named .npz
            raise UserError("a single .npy array, not an .npz archive of named arrays", file=fname, field=field,
                            fix="save it with numpy.savez(path, inputs=..., labels=...)")
        with z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise UserError("dataset file not found", file=fname, field=field, fix="check the path") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"not a readable .npz file ({str(e).splitlines()[0][:120]})", file=fname, field=field,
                        fix="save it with numpy.savez(path, inputs=..., labels=...)") from None
    inputs: dict[str, np.ndarray] = {}
    if all(n in arrays for n in input_shapes):
        for n, (shape, dtype) in input_shapes.items():
            inputs[n] = _fit(arrays[n], shape, dtype, file=fname, field=field, what=f"array '{n}'")
    elif "inputs" in arrays and len(input_shapes) == 1:
        (n, (shape, dtype)), = input_shapes.items()
        inputs[n] = _fit(arrays["inputs"], shape, dtype, file=fname, field=field, what="array 'inputs'")
    else:
        want = "'inputs'" if len(input_shapes) == 1 else ", ".join(f"'{n}'" for n in input_shapes)
        raise UserError(f"no array {want} in the npz (it has {', '.join(arrays) or 'none'})", file=fname,
                        field=field, fix=f"save the inputs as {want} and the labels as 'labels'")
    counts = {n: len(a) for n, a in inputs.items()}
    if len(set(counts.values())) > 1:
        raise UserError(f"input arrays have different sample counts {counts}", file=fname, field=field,
                        fix="give every input the same number of samples")
    if min(counts.values()) == 0:
        raise UserError("the dataset has no samples", file=fname, field=field, fix="add samples")
    labels = arrays.get("labels")
    if labels is not None:
        n = next(iter(counts.values()))
        if labels.ndim != 1 or len(labels) != n:
            raise UserError(f"'labels' has shape {list(labels.shape)} but there are {n} samples", file=fname,
                            field=field, fix="give one integer label per sample")
        if not np.issubdtype(labels.dtype, np.integer):
            raise UserError(f"'labels' are {labels.dtype}, not integers", file=fname, field=field,
                            fix="store class indices as integers")
    return Dataset(Path(spec.npz).name, inputs, labels)
