"""The front end: grammar, parser, AST, printer, spec files and located errors."""
