"""``policy/data_class.yml``: the deployment's data classification scheme.

Every manifest names the most sensitive class its callers send and it returns
(``classification.input``/``output``) with one of the four :class:`~portcullis.config.model.Classification`
levels. This file says what each level means for the people and policy authors of the deployment: the four
levels, each once, least to most sensitive, with a meaning and handling rules. ``lint`` and ``serve`` validate
it (its schema is ``schemas/data-class.schema.json``), so a scheme that names a level the gateway does not
know, leaves one out or orders them differently is refused rather than left to mislead a reader.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from portcullis.config.model import Classification


class DataClassLevel(BaseModel):
    """One classification level."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Classification = Field(description="One of Public, Internal, Confidential, Restricted.")
    meaning: str = Field(min_length=1, max_length=2000, description="What data of this level is.")
    handling: tuple[str, ...] = Field((), max_length=100, description="How data of this level must be handled "
                                      "(for people and policy authors; a rule for a level applies above it too).")


class DataClassScheme(BaseModel):
    """The deployment's classification scheme: the four levels, least to most sensitive."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    levels: tuple[DataClassLevel, ...] = Field(min_length=4, max_length=4, description="Public, Internal, "
                                               "Confidential and Restricted, in this order, each once.")

    @model_validator(mode="after")
    def _ordered(self) -> DataClassScheme:
        names = [level.name for level in self.levels]
        if names != list(Classification):
            raise ValueError("levels must be " + ", ".join(c.value for c in Classification) + ", in this order "
                             "(least to most sensitive), each once")
        return self
