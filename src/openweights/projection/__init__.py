"""Read models as a pure fold of the log: the same code feeds the live projector and replay."""
