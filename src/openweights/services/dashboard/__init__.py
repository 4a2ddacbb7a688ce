"""The dashboard: jobs, live logs, metric plots, workers, costs, tokens and secrets in a
browser (``python -m openweights.services.dashboard``; `ow up` starts it and prints its
URL). It is a client like the SDK: every page is read and every change made with the
signed-in token's rights, through the api service and the organization's live subjects;
it holds no credentials of its own and never touches the database."""
