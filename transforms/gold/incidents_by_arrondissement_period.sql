{{ config(materialized='table') }}
-- Police incidents per arrondissement, category group and period of the day (local time).
SELECT
    arrondissement,
    period_of_day,
    count(*) AS incidents
FROM {{ ref('silver.ddsp_incidents') }}
WHERE arrondissement IS NOT NULL
GROUP BY arrondissement, period_of_day
