{{ config(materialized='table') }}
-- Police incidents and fire-brigade interventions per local day, beside the day's weather.
WITH incidents AS (
    SELECT time_bucket(reported_at, 'day') AS day, count(*) AS incidents
    FROM {{ ref('silver.ddsp_incidents') }} GROUP BY 1
), interventions AS (
    SELECT time_bucket(alert_at, 'day') AS day, count(*) AS interventions
    FROM {{ ref('silver.bmpm_interventions') }} GROUP BY 1
), weather AS (
    SELECT observed_day AS day,
           round(avg(temperature_c), 1) AS avg_temperature_c,
           round(sum(precipitation_mm), 1) AS precipitation_mm,
           max(wind_kmh) AS max_wind_kmh
    FROM {{ ref('silver.meteo_observations') }} WHERE station = {{ var("weather_station", "13055001") }} GROUP BY 1
)
SELECT w.day, coalesce(i.incidents, 0) AS incidents, coalesce(f.interventions, 0) AS interventions,
       w.avg_temperature_c, w.precipitation_mm, w.max_wind_kmh,
       w.precipitation_mm >= 1.0 AS rainy
FROM weather w
LEFT JOIN incidents i ON i.day = w.day
LEFT JOIN interventions f ON f.day = w.day
