"""Tests for lt_transfer/backbones/ (one test file per source file)."""
