from __future__ import annotations

import dataclasses

import dagster as dg
from pydantic import Field

from poflow_dagster.extraction.llm import LLMSettings


class LLMResource(dg.ConfigurableResource):
    """An OpenAI-compatible endpoint for scans, images and documents no deterministic extractor maps.

    Empty fields fall back to ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` / ``POFLOW_LLM_MODEL``; without a key
    only the deterministic extractors run (scans then fail with ``needs_ocr_or_llm``).
    """

    api_key: str = Field(default="", description="API key (set it with dg.EnvVar; never logged).")
    base_url: str = Field(default="", description="Endpoint; empty = OPENAI_BASE_URL or the SDK default.")
    model: str = Field(default="", description="Model; empty = POFLOW_LLM_MODEL or the default.")

    def settings(self) -> LLMSettings | None:
        settings = LLMSettings.from_env(api_key=self.api_key or None)
        if settings is None:
            return None
        if self.base_url:
            settings = dataclasses.replace(settings, base_url=self.base_url)
        if self.model:
            settings = dataclasses.replace(settings, model=self.model)
        return settings
