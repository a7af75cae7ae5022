"""Thin Dagster resource shells over the core services."""

from poflow_dagster.resources.database import DatabaseResource
from poflow_dagster.resources.llm import LLMResource
from poflow_dagster.resources.progress import ProgressResource
from poflow_dagster.resources.shopify import ShopifyResource
from poflow_dagster.resources.storage import StorageResource

__all__ = ["DatabaseResource", "LLMResource", "ProgressResource", "ShopifyResource", "StorageResource"]
