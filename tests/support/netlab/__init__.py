"""One network lab for the tests and the benches: Linux network namespaces
joined by veths, bridges and one userspace delay line.

- plumbing.py: commands in namespaces, namespaces made and deleted, veths
  and addresses, nftables (random loss, drop-everything tables), background
  processes whose JSON lines are awaited, and whether a lab can run here.
- delayline.c, delayline.py: the one delay line (rate, delay, jitter in
  order or reordering; compiled with gcc on first use) and its driver.
- probes.py: standard-library probes run inside the namespaces.
- natlab.py: the tests' NAT lab (tests/natlab/): two hosts behind NAT
  routers of several kinds, a relay host, and faults.
- link.py: the bench's two hosts joined by one shaped link
  (bench/network.py).

Rules:

- Both topologies are built from plumbing.py and drive delayline.py; no
  other module runs ``ip`` or ``nft`` or opens a TAP device.
- Names never collide: a NAT lab's namespaces are ``p2nl<pid>x<n>-*`` (the
  building process's pid, so parallel sessions differ and leftovers of dead
  ones are recognised and removed), the bench link's are the fixed
  ``p2b-*``, held by a lock file so that two benches never share them.
- Root only (namespaces, nftables, TAP devices); ``unavailable_reason``
  says in one line why a lab cannot run, and the tests skip with it.
- The benches import this package as ``tests.support.netlab`` with the
  repository root on ``sys.path``; it imports nothing from p2pcp, so a lab
  measures whatever p2pcp the caller runs in it.
"""
