"""The base of every model read from a config file (gateway.yaml, the tags directory).

Unknown fields are errors and nothing is coerced (`strict`), so a typo or a YAML surprise
(`version: 1.10` read as a float, `no` read as false) is an error naming the field instead
of a silent change of meaning. Models are frozen: a loaded config is shared by every
request and must not change under them. A field that must accept YAML's lists for tuples
says so itself (`Field(strict=False)`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
