"""`ow worker`: join this machine to the fleet as an unmanaged worker.

An admin mints the machine's credentials (`ow token create --role worker --worker NAME`);
on the machine, `OPENWEIGHTS_API_KEY=<that token> ow worker` becomes the agent of worker
NAME: it reports its hardware (nvidia-smi, else ``cpu``), takes the jobs that match it,
heartbeats, and leaves on Ctrl-C or SIGTERM (its running job goes back to pending). The
provisioner never starts, stops or bills it: it has no machine start event, so it
costs nothing in `ow cost`.
"""

from __future__ import annotations

import os
import sys

import typer

from openweights.cli.common import client, console, friendly
from openweights.errors import InvalidRequest

MINT = "`ow token create --role worker --worker NAME --name NAME`"


@friendly
def worker(image: str = typer.Option(None, "--image",
                                     help="the docker image whose jobs it takes (default: "
                                          "$OW_DOCKER_IMAGE, else dev)")) -> None:
    """Join this machine as an unmanaged worker, with OPENWEIGHTS_API_KEY a worker token
    (an admin mints it: `ow token create --role worker --worker NAME --name NAME`)."""
    if not os.environ.get("OPENWEIGHTS_API_KEY"):
        raise InvalidRequest(f"set OPENWEIGHTS_API_KEY to a worker token ({MINT})")
    with client() as ow:
        ow.connect()  # the api says whose token it is: its organization, role and worker
        t = ow.transport
        role, worker_id, org = t.role, t.worker_id, t.org
    if role != "worker" or not worker_id:
        raise InvalidRequest(f"OPENWEIGHTS_API_KEY is a {role} token, not a worker's: an admin "
                             f"mints one with {MINT}")
    env = dict(os.environ, OW_WORKER_ID=worker_id, OW_MANAGED="0",
               OW_DOCKER_IMAGE=image or os.environ.get("OW_DOCKER_IMAGE") or "dev")
    console.print(f"joining organization {org} as worker {worker_id} (Ctrl-C leaves)")
    sys.stdout.flush()
    # The agent takes this process's place: Ctrl-C and SIGTERM reach it directly, and it
    # hands its running job back before it exits.
    os.execve(sys.executable, [sys.executable, "-m", "openweights.services.agent"], env)
