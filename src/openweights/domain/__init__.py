"""The pure core: one state machine per aggregate, ``decide`` and ``evolve``.

Nothing in this package does I/O, reads a clock or makes up an id: ``now``, the
actor and every new id are arguments. Services, the projector and the replay tool all
fold events through these same functions.
"""
