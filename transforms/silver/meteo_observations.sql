{{ config(materialized='table') }}
-- Hourly weather observations (the bronze table is upserted on station and time, so it is rebuilt in full).
SELECT
    station,
    observed_at,
    time_bucket(observed_at, 'day') AS observed_day,
    temperature_c,
    precipitation_mm,
    wind_kmh,
    humidity_pct
FROM {{ source('meteo_observations') }}
