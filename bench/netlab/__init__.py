"""The network lab of bench/network.py: namespaces, a C delay line, probes."""
