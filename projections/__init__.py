"""The read side's storage half: pure projection of ledger events to rows, the ClickHouse sink, the read model."""

from projections.project import COLUMNS, project
from projections.queries import ReadModel
from projections.store import ProjectionStore

__all__ = ["COLUMNS", "ProjectionStore", "ReadModel", "project"]
