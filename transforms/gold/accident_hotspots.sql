{{ config(materialized='table') }}
-- Traffic accidents reported by the police or the fire brigade, per grid cell.
SELECT
    hotspot_cell AS cell,
    count(*) AS accidents,
    sum(CASE WHEN source = 'police' THEN 1 ELSE 0 END) AS from_police,
    sum(CASE WHEN source = 'fire_brigade' THEN 1 ELSE 0 END) AS from_fire_brigade
FROM (
    SELECT hotspot_cell, 'police' AS source FROM {{ ref('silver.ddsp_incidents') }} WHERE category = 'accident'
    UNION ALL
    SELECT hotspot_cell, 'fire_brigade' AS source FROM {{ ref('silver.bmpm_interventions') }} WHERE kind = 'accident_circulation'
)
WHERE hotspot_cell IS NOT NULL
GROUP BY hotspot_cell
