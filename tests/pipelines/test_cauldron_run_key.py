"""`cauldron build` keys its reruns by content: the adapters file and the eval sets, not their paths."""


def test_the_run_key_follows_the_adapters_file_and_eval_content(tmp_path):
    from cauldron.dedup import EvalIndex
    from pipelines.cauldron import BuildConfig, run_key

    adapters = tmp_path / "adapters.yaml"
    adapters.write_text("adapters: {}\n")
    config = BuildConfig(sources=[], output=tmp_path / "out", adapters_yaml=adapters)
    index = EvalIndex()
    index.add_text("evals", "q1", "how many red marbles remain after giving away three of seven")
    key = run_key(config, index)
    assert run_key(config, index) == key
    adapters.write_text("adapters: {x: 1}\n")  # edited in place, same path
    assert run_key(config, index) != key
    adapters.write_text("adapters: {}\n")
    index.add_text("evals", "q2", "which of the two marbles is the larger one of all of them")
    assert run_key(config, index) != key
