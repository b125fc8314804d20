"""`datagen preview`: a self-contained HTML page of a dataset (see page.py)."""
from datagen.preview.page import PreviewSummary, write_preview

__all__ = ["PreviewSummary", "write_preview"]
