"""The runtime: data, training, checkpoints, evaluation and features (imports only `compiler`)."""
