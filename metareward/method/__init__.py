"""The paper's method, pure: the judge and meta-judge prompts (verbatim), parsing the judges' text, score
statistics and the Bradley-Terry/Elo fits, actor and judge preference pairs, the judge's health metrics and the
drift guard's figures.

Functions over records, testable in milliseconds, with their numbers worked out by hand in the tests. May import
`metareward.records`, `metareward.config` (section types only) and `metareward.intervals`, and nothing else of the
project: no store, no engine, no torch.
"""
