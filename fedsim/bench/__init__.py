"""Performance benchmarks: the harness behind ``fedsim bench``, its floors and its probes."""
