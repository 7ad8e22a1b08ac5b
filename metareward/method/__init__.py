"""The paper's method, pure: the judge and meta-judge prompts (verbatim), parsing the judges' text, score
statistics and the Bradley-Terry/Elo fits, actor and judge preference pairs, the judge's health metrics.

Functions over records, testable in milliseconds, with their numbers worked out by hand in the tests. May import
`metareward.records` and `metareward.config` (section types only), and nothing else of the project: no store,
no engine, no torch.
"""
