{{ config(materialized='table') }}
-- The city's events agenda (public data: venues keep their coordinates' grid cells only for joins).
SELECT
    event_id,
    title,
    category,
    venue,
    arrondissement,
    starts_at,
    ends_at,
    time_bucket(starts_at, 'day') AS event_day,
    geo_cell(lat, lon, 1000) AS cell_1km,
    expected_attendance,
    free_entry
FROM {{ source('ville_events') }}
