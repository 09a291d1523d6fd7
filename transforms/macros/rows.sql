{#- Row helpers shared by models; imported into every model as `rows`. -#}

{#- The latest row of each key: bronze keeps every delivery of a record, silver keeps the last one.
    Ties on the ingestion time are broken by source file, so a full rebuild and an incremental run agree. -#}
{% macro latest(relation, key) -%}
SELECT * EXCLUDE (__rank) FROM (
    SELECT *, row_number() OVER (PARTITION BY {{ key }} ORDER BY _ingested_at DESC, _source_file DESC) AS __rank
    FROM {{ relation }}
) WHERE __rank = 1
{%- endmacro %}
