"""The GPU trainer benchmark's smoke mode: both cases run the same packed batch on the CPU."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu" / "trainer.py"


@pytest.mark.slow  # two tiny models, a few optimizer steps each
def test_smoke_run_measures_both_cases_on_one_batch():
    spec = importlib.util.spec_from_file_location("gpu_trainer_benchmark", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations there
    spec.loader.exec_module(module)
    baseline, ours = module.run(smoke=True)
    assert (baseline["case"], ours["case"]) == ("transformers+peft", "potion")
    assert baseline["tokens_per_step"] == ours["tokens_per_step"] > 0 and ours["images_per_step"] > 0
    assert baseline["trainable_m"] == ours["trainable_m"]  # the same parameters train in both
    assert ours["speedup"] > 0 and ours["loss_paths_abs_diff"] < 1e-5
