"""The front end: grammar, parser, AST, the table of words, printer, steps, spec files, errors."""
