"""The IR passes: analyses write `meta`, transforms return a new graph."""
