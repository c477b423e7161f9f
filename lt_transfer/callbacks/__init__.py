"""Callbacks that work on any LightningModule."""

__all__: list[str] = []
