"""Evaluation with the Idefics2 paper's protocol: benchmarks read from local files, prompts and stop
words of Appendix A.3.1, greedy batched generation, the benchmarks' own metrics, and reports."""
