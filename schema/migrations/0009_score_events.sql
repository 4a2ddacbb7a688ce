-- Evaluation results (ow.evals, `ow evals ls`) read the run events that report a score
-- ({"type": "score", ...}: openweights.jobs.evals.scores) of one organization.
CREATE INDEX events_scores ON events (organization_id, ((data->>'model')), ((data->>'eval')),
    seq DESC) WHERE data->>'type' = 'score';
