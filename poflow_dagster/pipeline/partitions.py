from __future__ import annotations

import dagster as dg

#: One partition per upload; the key is the upload id (``up-20261122T203611-3f9a1c2b``). Ended uploads' partitions
#: are removed after POFLOW_PARTITION_RETENTION_DAYS by ``partition_retention_job`` (``pipeline/retention.py``).
po_uploads = dg.DynamicPartitionsDefinition(name="po_uploads")
