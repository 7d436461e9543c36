"""p2pcp: copy files between two machines, verified and end-to-end encrypted."""

__version__ = "0.1.0"
