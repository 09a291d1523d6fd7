{{ config(materialized='incremental', unique_key='intervention_id') }}
-- Fire-brigade interventions with their response time; victims' ages in 10-year bands, callers as pseudonyms.
SELECT
    intervention_id,
    alert_at,
    time_bucket(alert_at, 'hour') AS alert_hour,
    kind,
    arrondissement,
    CAST(date_part('epoch', arrival_at) - date_part('epoch', alert_at) AS DOUBLE) / 60.0 AS response_minutes,
    victims,
    age_band(victim_age, 10) AS victim_age_band,
    geo_cell(lat, lon, 1000) AS cell_1km,
    geo_cell(lat, lon, {{ var('hotspot_cell_meters', 5000) }}) AS hotspot_cell,
    caller_phone AS caller_token,
    caller_phone_key_id AS caller_key_id,
    _ingested_at AS ingested_at
FROM ({{ rows.latest(source('bmpm_interventions'), 'intervention_id') }})
