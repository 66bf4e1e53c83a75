"""The front end: grammar, parser, AST (layers live in ir/ops/), printer, spec files, errors."""
