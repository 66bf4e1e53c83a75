"""The graph IR: ops, the graph, its passes and the pipeline that runs them."""
