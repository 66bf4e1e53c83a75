"""The paper's test protocols: dense, multi-crop, fusion, features."""
