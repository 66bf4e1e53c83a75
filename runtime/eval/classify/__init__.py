"""The classification protocol (Sect. 3.2): dense and multi-crop passes, the Tables 3–6 rows."""
