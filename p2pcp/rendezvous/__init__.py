"""Short codes (``7-crossbow-puzzle``) that stand for a ticket.

A layer beside ``transfer/``: it imports ``core/`` and the relay client
(``relay/client.py``), never ``net/`` or ``transfer/``; ``cli/`` uses it.

- ``words.py``, ``codes.py`` (sans-IO): the word list and the code format.
- ``exchange.py`` (sans-IO): SPAKE2 on the code, then the ticket sealed
  under the shared key (``CodeExchange``).
- ``channel.py``: the ``Channel`` protocol that carries the exchange's
  messages; ``rendezvous.mailbox`` implements it over the relay's
  mailbox, ``rendezvous.lan`` on the LAN.
- ``rendezvous.session``: the sender's ``offer`` and the receiver's
  ``claim``, and the one place that picks a channel
  (``sender_rendezvous``, ``open_receiver_channel``).
"""
