"""The programmatic surface: everything the CLI does is one call here."""

from __future__ import annotations

from genworld.data.build import build_dataset
from genworld.data.ids import all_dataset_ids
from genworld.data.info import check_dataset, dataset_info, list_datasets

__all__ = ["all_dataset_ids", "build_dataset", "check_dataset", "dataset_info", "list_datasets"]
