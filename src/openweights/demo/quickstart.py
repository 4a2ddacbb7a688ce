"""The quickstart: two custom jobs on the local stack (`ow up` must be running).

Submits `addition` (a=5, b=9) and a job that logs a loss curve and returns a file,
streams the loss curve's events live, waits for both, prints the result and
downloads the outputs.
"""

from pathlib import Path

from pydantic import BaseModel

from openweights import Jobs, OpenWeights, register

HERE = Path(__file__).parent


class AdditionParams(BaseModel):
    a: float
    b: float


@register("addition")
class Addition(Jobs):
    mount = {str(HERE / "worker_side.py"): "worker_side.py"}
    params = AdditionParams
    requires_vram_gb = 0
    base_image = "python:3.11-slim"

    def get_entrypoint(self, p: AdditionParams) -> str:
        return f"python worker_side.py {p.a} {p.b}"


class CurveParams(BaseModel):
    steps: int = 20


@register("loss_curve")
class LossCurve(Jobs):
    mount = {str(HERE / "loss_curve.py"): "loss_curve.py"}
    params = CurveParams
    requires_vram_gb = 0
    base_image = "python:3.11-slim"

    def get_entrypoint(self, p: CurveParams) -> str:
        return f"STEPS={p.steps} python loss_curve.py"


def main(out_dir: str = "quickstart-outputs") -> float:
    ow = OpenWeights()
    addition = ow.addition.create(a=5, b=9)
    curve = ow.loss_curve.create(steps=20)
    print(f"submitted {addition.id} and {curve.id}")
    # The same params are the same job: a repeat demo finds it done, its events stored.
    label = "live" if curve.status in ("pending", "in_progress") else "stored"
    if label == "stored":
        print(f"{curve.id} already ran with these params: its stored events")
    for event in ow.events.subscribe(curve.id):
        print(f"  {label}: {event['data']}")
    addition.wait(timeout=300)
    curve.wait(timeout=300)
    print(f"{addition.id}: {addition.status}, result = {addition.outputs.get('result')}")
    print(f"{curve.id}: {curve.status}, last loss = {curve.outputs.get('loss')}")
    files = curve.download(out_dir)
    print("downloaded:", ", ".join(str(f) for f in files))
    ow.close()
    return float(addition.outputs["result"])


if __name__ == "__main__":
    print(main())
