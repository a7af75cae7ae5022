from __future__ import annotations

import dagster as dg

#: One partition per upload; the key is the upload id (``up-20261122T203611-3f9a1c2b``).
po_uploads = dg.DynamicPartitionsDefinition(name="po_uploads")
