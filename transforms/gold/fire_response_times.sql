{{ config(materialized='table') }}
-- Fire-brigade response times per arrondissement and week.
SELECT
    arrondissement,
    time_bucket(alert_at, 'week') AS week,
    count(*) AS interventions,
    round(avg(response_minutes), 1) AS avg_response_minutes,
    round(approx_percentile_cont(response_minutes, 0.9), 1) AS p90_response_minutes
FROM {{ ref('silver.bmpm_interventions') }}
WHERE arrondissement IS NOT NULL AND response_minutes IS NOT NULL
GROUP BY arrondissement, time_bucket(alert_at, 'week')
