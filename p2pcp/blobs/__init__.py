"""Content addressing, sans-IO: hash tree, outboard, verified range
encoding, manifests of files, and checks on untrusted names.

- ``tree``: LEAF_SIZE, hash_leaf/hash_parent/hash_root, TreeBuilder, Outboard.
- ``encoding``: encode_plan, encoded_size, RangeDecoder and its events.
- ``collection``: Manifest, Entry, encode_manifest, decode_manifest.
- ``names``: check_relative_path, check_manifest_paths, unsafe_reason,
  path_bytes (a path's bytes on disk), display_path (a path for a message),
  case_fold and nfc (for a receiver's own file-system checks).

Nothing here does I/O (no asyncio, sockets, files or clock); the one thread
used is TreeBuilder's helper for the whole-blob BLAKE3. Import the
submodules directly; this package imports nothing so that it stays cheap.
"""
