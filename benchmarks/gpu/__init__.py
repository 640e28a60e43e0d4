"""Sections of `benchmarks/gpu_suite.py`: each module exposes `run(smoke: bool) -> list[dict]`.

A row is one measured figure next to its baseline from the same run. Keys the table shows (all but
`section`, `name`, `value` and `unit` optional; any other key is kept in the JSON):
    section, name, value, unit, baseline, baseline_value, ratio, goal, met, notes
`ratio` is value / baseline_value where higher is better; `goal` is text such as ">= 200000" and `met`
whether the value reaches it. With `smoke`, a section runs at tiny shapes (CPU, seconds) to prove that it
still runs, and its numbers mean nothing.
"""
