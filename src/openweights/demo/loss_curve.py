"""Runs on the worker: logs a loss curve for a few seconds and writes a plot-like file."""

import json
import math
import os
import time

from openweights import OpenWeights

ow = OpenWeights()
steps = int(os.environ.get("STEPS", "20"))
losses = []
for step in range(steps):
    loss = round(2.5 * math.exp(-step / 6) + 0.1, 4)
    losses.append(loss)
    print(f"step {step} loss {loss}")
    ow.run.log({"step": step, "loss": loss})
    time.sleep(0.15)
os.makedirs("uploads", exist_ok=True)
with open("uploads/losses.json", "w") as f:
    json.dump({"loss": losses}, f)
print("wrote uploads/losses.json")
