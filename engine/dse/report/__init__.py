"""A run's report as one self-contained HTML file: its step graph, a timeline per endpoint, every step in full."""

from __future__ import annotations

from .html import render, write

__all__ = ["render", "write"]
