"""Runs on the worker: adds two numbers and logs the result as a run event."""

import sys

from openweights import OpenWeights

ow = OpenWeights()
a, b = float(sys.argv[1]), float(sys.argv[2])
print(f"adding {a} + {b}")
ow.run.log({"result": a + b})
