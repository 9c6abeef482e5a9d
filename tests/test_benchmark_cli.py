"""The benchmark and demo command lines: ``--name=value`` flags (typed lists included) and a bad setting
answered with one line, exit status 2, before anything runs."""

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _demo_module():
    spec = importlib.util.spec_from_file_location("aim_demo", ROOT / "examples" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(monkeypatch, main, command: str, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", [command, *args])
    main()


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        (
            "param_count",
            ["--preset=aim_nope"],
            "--preset=aim_nope: Unknown AIM preset 'aim_nope': choose one of",
        ),
        ("train_throughput", ["--device=gpu"], "--device=gpu: pass --device=cpu or --device=cuda."),
        ("train_throughput", ["--steps=0", "--batch=0"], "--batch=0, --steps=0: must be at least 1."),
        (
            "collect_speed",
            ["--task=easy"],
            "--task=easy: pass one MT50 task (e.g. button-press-v3), not a group.",
        ),
        ("collect_speed", ["--image_size=31"], "--image_size=31: must be even (video)."),
        ("memory", ["--measure_layers=[2]"], "--measure_layers=[2]: pass at least two different depths"),
        ("memory", ["--measure_width=wide"], "--measure_width=wide: pass full (the preset's width)"),
        ("memory", ["--gpus=[0,8]"], "--gpus=[0, 8]: pass GPU counts of at least 1"),
        ("gpu_check", ["--smoke=true", "--train_layers=[]"], "--train_layers=[]: pass depths of at least 1"),
        ("success", ["--methods=[aim_intent_causal,bogus]"], "--methods: unknown ['bogus']; choose from"),
        ("success", ["--tasks=nope-v3"], "--tasks=nope-v3: Unknown MetaWorld task 'nope-v3'"),
        ("success", ["--image_size=40"], "--image_size=40: AIM needs a multiple of 16"),
        ("value_maps", ["--modes=[full]"], "--modes: unknown ['full']; choose from"),
        (
            "full_width_smoke",
            ["--preset=aim_tiny"],
            "--preset=aim_tiny: this benchmark runs one of aim_wan22_5b",
        ),
    ],
)
def test_a_benchmark_answers_a_bad_setting_in_one_line(monkeypatch, capsys, module, args, message):
    main = importlib.import_module(f"benchmarks.{module}").main
    with pytest.raises(SystemExit) as exit_info:
        _run(monkeypatch, main, module, *args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"benchmarks.{module}: error: {message}" in err and "Traceback" not in err


def test_param_count_reads_its_flags(monkeypatch, capsys):
    from benchmarks.param_count import main

    _run(monkeypatch, main, "param_count", "--preset=aim_wan22_5b", "--action_dim=7")
    out = capsys.readouterr().out
    assert '"rgb": 4999787712' in out  # diffusers' WanTransformer3DModel, Wan2.2-TI2V-5B config


def test_demo_refuses_to_replace_a_folder_that_is_not_an_earlier_demo(monkeypatch, capsys, tmp_path):
    keep = tmp_path / "thesis.txt"
    keep.write_text("not a demo")
    with pytest.raises(SystemExit) as exit_info:
        _run(monkeypatch, _demo_module().main, "demo.py", "--quick=true", f"--output_dir={tmp_path}")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert (
        f"demo: error: --output_dir={tmp_path}: {tmp_path} exists and is not an earlier demo's output" in err
    )
    assert keep.read_text() == "not a demo"
