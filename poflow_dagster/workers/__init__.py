"""Long-lived run workers: Celery workers that execute whole Dagster runs launched by ``CeleryRunLauncher``."""
