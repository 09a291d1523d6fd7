{{ config(materialized='table') }}
-- Night-time noise reports (22 h – 7 h local), on nights with and without an event in the same arrondissement.
WITH noise AS (
    SELECT arrondissement,
           -- a report at 1 a.m. belongs to the previous evening's night
           time_bucket(submitted_at - INTERVAL '7 hours', 'day') AS night
    FROM {{ ref('silver.ville_signalements') }}
    WHERE topic = 'bruit' AND at_night AND arrondissement IS NOT NULL
), event_nights AS (
    SELECT DISTINCT arrondissement, event_day AS night FROM {{ ref('silver.ville_events') }}
)
SELECT
    e.night IS NOT NULL AS event_that_night,
    count(*) AS reports,
    count(DISTINCT n.arrondissement || '/' || CAST(n.night AS VARCHAR)) AS arrondissement_nights
FROM noise n
LEFT JOIN event_nights e ON e.arrondissement = n.arrondissement AND e.night = n.night
GROUP BY e.night IS NOT NULL
