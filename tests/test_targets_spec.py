"""Target specs and the registry: every built-in loads, every mistake is named precisely."""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import pytest

from targets.basics import UserError
from targets.registry import (
    DEFAULT_TARGET,
    builtin_targets,
    list_targets,
    load_target,
    register_target,
    unregister_target,
)
from targets.spec import TargetSpec, load_target_file, parse_target_text
from targets.timing import Protocol

EXPECTED_BUILTINS = {
    "ort-cpu",
    "ort-cpu-all",
    "torch-cpu",
    "torch-cuda",
    "torch-cuda-graph",
    "ort-cuda",
    "ort-trt",
    "trt-fp32",
    "trt-fp16",
    "debug",
}

GOOD = """
name = "my-box"
description = "a test box"
backend = "onnxruntime"
device = "cpu"
precision = "fp32"
batch_size = 2
threads = 1

[options]
provider = "cpu"
graph_optimization_level = "extended"

[protocol]
rounds = 4
min_rounds = 2
"""


def write(tmp_path: Path, text: str, name: str = "box.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_builtins_all_load() -> None:
    assert set(builtin_targets()) == EXPECTED_BUILTINS
    for name in EXPECTED_BUILTINS:
        spec = load_target(name)
        assert spec.name == name
        assert spec.source == "builtin"
        Protocol.for_target(spec)  # protocol overrides valid too


def test_default_target_is_ort_cpu_single_thread() -> None:
    spec = load_target(DEFAULT_TARGET)
    assert DEFAULT_TARGET == "ort-cpu"
    assert (spec.backend, spec.device, spec.precision) == ("onnxruntime", "cpu", "fp32")
    assert (spec.batch_size, spec.threads) == (1, 1)
    assert spec.option("provider") == "cpu"
    assert spec.option("inter_op_threads") == 1
    assert spec.option("execution_mode") == "sequential"
    assert spec.option("graph_optimization_level") == "all"
    assert load_target("ort-cpu-all").threads == 0


def test_load_file(tmp_path: Path) -> None:
    spec = load_target(str(write(tmp_path, GOOD)))
    assert spec.name == "my-box"
    assert spec.batch_size == 2
    assert spec.options["graph_optimization_level"] == "extended"
    assert Protocol.for_target(spec).rounds == 4
    assert spec.source.endswith("box.toml")
    assert load_target(write(tmp_path, GOOD)) == spec  # a Path works too


def test_name_defaults_to_file_stem(tmp_path: Path) -> None:
    spec = load_target_file(write(tmp_path, 'backend = "debug"\n', "edge-box.toml"))
    assert spec.name == "edge-box"
    assert spec.device == "cpu"


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ('name = "x"\nbackend = "debug"\nthread = 2\n', ["box.toml", "'thread'", "'threads'"]),
        ('name = "x"\nbackend = "debug"\nthreads = "2"\n', ["box.toml", "'threads'", "integer"]),
        ('name = "x"\nbackend = "debug"\nthreads = true\n', ["'threads'", "integer"]),
        ('name = "x"\nbackend = "debug"\nbatch_size = 0\n', ["'batch_size'", ">= 1"]),
        ('name = "x"\nbackend = "debug"\nthreads = -1\n', ["'threads'", "0 for all cores"]),
        ('name = "x"\nbackend = "onnxrt"\n', ["'backend'", "'onnxruntime'", "allowed"]),
        ('name = "x"\nbackend = "debug"\nprecision = "int8"\n', ["'precision'", "'fp16'"]),
        ('name = "x"\nbackend = "onnxruntime"\ndevice = "gpu"\n', ["'device'", "cuda:N"]),
        ('name = "x"\nbackend = "onnxruntime"\ndevice = "debug"\n', ["'device'"]),
        ('name = "x"\ndevice = "cpu"\n', ["'backend' is missing"]),
        ('name = "has space"\nbackend = "debug"\n', ["'name'", "no spaces"]),
        (
            'name = "x"\nbackend = "onnxruntime"\n[options]\nprovidr = "cpu"\n',
            ["options.providr", "'provider'"],
        ),
        (
            'name = "x"\nbackend = "onnxruntime"\n[options]\nprovider = "rocm"\n',
            ["options.provider", "'tensorrt'"],
        ),
        (
            'name = "x"\nbackend = "onnxruntime"\n[options]\ninter_op_threads = 1.5\n',
            ["options.inter_op_threads", "integer"],
        ),
        ('name = "x"\nbackend = "tensorrt"\ndevice = "cpu"\n', ["tensorrt", "cuda"]),
        ('name = "x"\nbackend = "onnxruntime"\nprecision = "fp16"\n', ["fp16", "tensorrt"]),
        ('name = "x"\nbackend = "onnxruntime"\ndevice = "cuda"\n', ["provider", "cuda"]),
        ('name = "x"\nbackend = "torch"\nprecision = "fp16"\n', ["fp16", "cuda"]),
        ('name = "x"\nbackend = "debug"\noptions = 3\n', ["'options'", "table"]),
        ('name = "x"\nbackend = "debug"\n[protocol]\nround = 3\n', ["protocol.round", "'rounds'"]),
        ('name = "x"\nbackend = "debug"\n[protocol]\nrounds = 0\n', ["protocol.rounds", ">= 1"]),
        ('name = "x"\nbackend = "debug"\n[protocol]\nstatistic = "p200"\n', ["protocol.statistic"]),
        ('name = "x"\nbackend = "debug"\n[protocol]\nmin_rounds = 1.5\n', ["min_rounds"]),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_target(str(path))
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, (needle, message)
    assert "\n" not in message


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'name = "x"\nbackend = "debug"\nthreads = = 2\n')
    with pytest.raises(UserError) as info:
        load_target(str(path))
    message = str(info.value)
    assert str(path) in message
    assert "line 3" in message
    assert "invalid TOML" in message
    assert "fix" in message


def test_unknown_name_lists_known_targets() -> None:
    with pytest.raises(UserError) as info:
        load_target("no-such-target")
    message = str(info.value)
    assert "no-such-target" in message
    for name in ("ort-cpu", "trt-fp16", "debug"):
        assert name in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such target file"):
        load_target(str(tmp_path / "missing.toml"))


def test_register_and_shadowing() -> None:
    spec = replace(load_target("debug"), name="debug-copy", source="")
    register_target(spec)
    try:
        assert "debug-copy" in list_targets()
        assert load_target("debug-copy") == spec
        register_target(spec)  # the same spec again is fine
        with pytest.raises(UserError, match="already defined"):
            register_target(replace(spec, batch_size=4))
        register_target(replace(spec, batch_size=4), replace=True)
        assert load_target("debug-copy").batch_size == 4
        with pytest.raises(UserError, match="already defined"):
            register_target(replace(load_target("ort-cpu"), threads=2))
    finally:
        unregister_target("debug-copy")
    assert "debug-copy" not in list_targets()


def test_spec_is_read_only_and_picklable() -> None:
    spec = load_target("ort-cpu")
    with pytest.raises(TypeError):
        spec.options["provider"] = "cuda"  # type: ignore[index]
    clone = pickle.loads(pickle.dumps(spec))
    assert clone == spec
    assert isinstance(clone, TargetSpec)


def test_parse_text_directly() -> None:
    spec = parse_target_text('name = "t"\nbackend = "debug"\n', "inline")
    assert spec.source == "inline"
    assert spec.to_dict()["backend"] == "debug"
