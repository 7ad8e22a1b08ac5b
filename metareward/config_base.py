"""The base of every config section (`metareward.config`, `metareward.config_eval`): unknown keys, bad values on
assignment and inf/nan are refused where they are written, not deep inside a stage."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # inf and nan pass every ge/gt bound, then fail (or train on garbage) deep inside a stage
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
