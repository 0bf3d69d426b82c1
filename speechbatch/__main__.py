"""`python -m speechbatch` is the `speechbatch` console script."""

from speechbatch.cli import main

main()
