"""The quickstart jobs; `ow demo` runs them (see README)."""
