"""`python -m vggspec` is the `vggspec` command."""

from vggspec.cli import main

raise SystemExit(main())
