"""Paths shared by the tests (a module of its own: two conftest.py files cannot both be
imported as `conftest`)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
TABLE1 = ("A", "A-LRN", "B", "C", "D", "E")
