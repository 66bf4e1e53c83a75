"""Lowering a compiled graph to a torch.nn.Module, and the backends it runs on."""
