"""Data core: episodes, dataset ids, Minari I/O, multi-env datasets and samplers."""
