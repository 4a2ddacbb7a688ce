-- The model registry (ow.models, `ow models ls`) reads the run events that announce a
-- model ({"type": "model", ...}: openweights.jobs.models) of one organization.
CREATE INDEX events_models ON events (organization_id, ((data->>'model_id')), seq DESC)
    WHERE data->>'type' = 'model';
