"""Benchmarks and judge evaluation: MT-Bench, AlpacaEval 2, Arena-Hard v0.1, agreement with human labels.

Every scorer here is a pure function that reproduces what the official harness prints on the same input
(FastChat ``show_result.py``, alpaca_eval ``get_winrate`` / ``get_length_controlled_winrate``, arena-hard-auto
v0.1 ``show_result.py``), and every file reader/writer speaks that harness's format, so our numbers can be
checked against theirs row by row. Nothing here imports torch, vLLM or Prefect at module level. May import
`metareward.runstore` (files), `metareward.inputs.jsonl`, `metareward.method.scoring` (Bradley-Terry) and
`metareward.engines.base`; the benchmark *stage* that runs these is `metareward.pipeline.benchmark`.

    mtbench.py     FastChat single-answer grading: templates, ``[[rating]]`` parser, score per turn/category
    alpaca.py      alpaca_eval: model_outputs.json, annotations.json, win rate + standard error, LC win rate
    arena_hard.py  arena-hard-auto v0.1: two games per prompt, ``[[A>>B]]`` verdicts, Bradley-Terry, bootstrap
    agreement.py   judge vs human labels (with/without ties), swap consistency, Spearman/Kendall, importer
    judges.py      the evaluator judge (OpenAI-compatible endpoint or a local engine) and its call cache
    harness.py     what the benchmark stage runs: answer, judge, score, write the official files
    cli.py         ``metareward eval ...``: the scorers on the official harnesses' files
"""
