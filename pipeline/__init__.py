"""Export Bitrix24 CRM deals into typed, partitioned Parquet with an error sidecar.

Data flows one way: config -> ID source -> fetch -> normalise -> write -> run summary.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
