"""Every event of openweights, and the one codec that puts them on the wire."""

from openweights.events.base import Actor, Event
from openweights.events.codec import ALL_EVENTS, AnyEvent, decode, decode_one, encode
from openweights.events.job import (
    JobAssigned,
    JobCanceled,
    JobCompleted,
    JobFailed,
    JobRequeued,
    JobRequirementsChanged,
    JobReset,
    JobSpec,
    JobSubmitted,
    JobTimeoutExtended,
    JobWaitReasonChanged,
    RunLogStored,
    RunStarted,
)
from openweights.events.org import (
    FileCreated,
    OrganizationCreated,
    SecretRemoved,
    SecretSet,
    TokenCreated,
    TokenRevoked,
)
from openweights.events.run import RunEventLogged, RunFileUploaded
from openweights.events.worker import (
    WorkerLost,
    WorkerMachineFailed,
    WorkerMachineStarted,
    WorkerRegistered,
    WorkerRequested,
    WorkerShutdownRequested,
    WorkerStopped,
    WorkerTerminated,
    WorkerTTLExtended,
)

__all__ = [
    "ALL_EVENTS", "Actor", "AnyEvent", "Event", "FileCreated", "JobAssigned", "JobCanceled",
    "JobCompleted", "JobFailed", "JobRequeued", "JobRequirementsChanged", "JobReset", "JobSpec",
    "JobSubmitted", "JobTimeoutExtended", "JobWaitReasonChanged", "OrganizationCreated",
    "RunEventLogged", "RunFileUploaded", "RunLogStored", "RunStarted", "SecretRemoved", "SecretSet",
    "TokenCreated", "TokenRevoked", "WorkerLost", "WorkerMachineFailed",
    "WorkerMachineStarted", "WorkerRegistered", "WorkerRequested", "WorkerShutdownRequested",
    "WorkerStopped", "WorkerTTLExtended", "WorkerTerminated", "decode", "decode_one", "encode",
]
