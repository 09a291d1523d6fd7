{{ config(materialized='incremental', unique_key='incident_id') }}
-- Police incidents, one row per incident (the last delivery wins). Reporters are pseudonyms already
-- (pseudonymized at landing); places are generalized to grid cells, times to the hour; free-text notes
-- (sensitive) are dropped.
SELECT
    incident_id,
    reported_at,
    time_bucket(reported_at, 'hour') AS reported_hour,
    {{ time.period_of_day('reported_at') }} AS period_of_day,
    category,
    arrondissement,
    geo_cell(lat, lon, 1000) AS cell_1km,
    geo_cell(lat, lon, {{ var('hotspot_cell_meters', 5000) }}) AS hotspot_cell,
    reporter_name AS reporter_token,
    reporter_phone AS reporter_phone_token,
    reporter_name_key_id AS reporter_key_id,
    _ingested_at AS ingested_at
FROM ({{ rows.latest(source('ddsp_incidents'), 'incident_id') }})
