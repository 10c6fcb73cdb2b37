"""zmicro's side-by-side benchmark suite: ``python -m benchmarks`` or ``zmicro bench``."""
