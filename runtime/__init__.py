"""vggspec runtime: data, training and evaluation (imports the compiler, never the CLI)."""
