{{ config(materialized='incremental', unique_key='report_id') }}
-- Citizens' reports: e-mail addresses are pseudonyms from landing, ages in 10-year bands, places in 1 km cells;
-- the free text (sensitive) is dropped.
SELECT
    report_id,
    submitted_at,
    time_bucket(submitted_at, 'hour') AS submitted_hour,
    time_bucket(submitted_at, 'day') AS submitted_day,
    {{ time.is_night('submitted_at') }} AS at_night,
    topic,
    arrondissement,
    geo_cell(lat, lon, 1000) AS cell_1km,
    reporter_email AS reporter_token,
    reporter_email_key_id AS reporter_key_id,
    age_band(reporter_age, 10) AS reporter_age_band,
    _ingested_at AS ingested_at
FROM ({{ rows.latest(source('ville_signalements'), 'report_id') }})
