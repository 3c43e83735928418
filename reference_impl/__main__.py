"""`python -m reference_impl` runs the `auditkit` command."""

from reference_impl.cli import main

main()
