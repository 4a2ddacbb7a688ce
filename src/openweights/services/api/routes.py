"""Which handler answers each endpoint: the api's whole surface at a glance."""

from __future__ import annotations

from openweights.api import protocol
from openweights.services.api import (
    agents,
    costs,
    evals,
    files,
    history,
    jobs,
    models,
    runs,
    tenancy,
    workers,
)
from openweights.services.api.context import Handler

ROUTES: dict[str, Handler] = {
    "jobs.submit": jobs.submit_job,
    "jobs.get": jobs.get_job,
    "jobs.list": jobs.list_jobs,
    "jobs.find": jobs.find_jobs,
    "jobs.cancel": jobs.cancel_job,
    "jobs.restart": jobs.restart_job,
    "jobs.lease": jobs.renew_job_lease,
    "jobs.history": history.job_history,
    "runs.list": runs.list_runs,
    "runs.get": runs.get_run,
    "events.list": runs.list_events,
    "events.latest": runs.latest_events,
    "models.list": models.list_models,
    "models.get": models.get_model,
    "evals.results": evals.eval_results,
    "run.log": runs.log_run_events,
    "run.script.start": runs.start_script_run,
    "run.script.end": runs.end_script_run,
    "logs.read": runs.read_logs,
    "files.upload.begin": files.begin_upload,
    protocol.UPLOAD_CHUNK: files.receive_chunk,
    "files.upload.end": files.end_upload,
    "files.upload.abort": files.abort_upload,
    "files.get": files.get_file,
    "files.read": files.read_file,
    "agent.register": agents.register_worker,
    "agent.run.start": agents.start_run,
    "agent.run.end": agents.end_run,
    "agent.run.uploaded": agents.record_uploads,
    "agent.stopped": agents.report_stopped,
    "agent.ttl": agents.extend_worker_ttl,
    "agent.secrets": agents.give_worker_secrets,
    "workers.list": workers.list_workers,
    "costs.report": costs.cost_report,
    "costs.limit.set": costs.set_spending_limit,
    "tokens.create": tenancy.create_token,
    "tokens.list": tenancy.list_tokens,
    "tokens.revoke": tenancy.revoke_token,
    "secrets.set": tenancy.set_secrets,
    "secrets.list": tenancy.list_secret_names,
    "secrets.show": tenancy.show_secrets,
    "secrets.remove": tenancy.remove_secret,
}
assert set(ROUTES) == {*protocol.ENDPOINTS, protocol.UPLOAD_CHUNK}, "an endpoint has no handler"
