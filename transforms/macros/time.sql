{#- Time generalization helpers; imported into every model as `time`. -#}

{#- Period of the local day: night (0–6 h), morning (6–12 h), afternoon (12–18 h), evening (18–24 h). -#}
{% macro period_of_day(ts) -%}
CASE
    WHEN date_part('hour', local_time({{ ts }})) < 6 THEN 'night'
    WHEN date_part('hour', local_time({{ ts }})) < 12 THEN 'morning'
    WHEN date_part('hour', local_time({{ ts }})) < 18 THEN 'afternoon'
    ELSE 'evening'
END
{%- endmacro %}

{#- Whether the local time is at night in the sense of noise rules (22 h – 7 h). -#}
{% macro is_night(ts) -%}
(date_part('hour', local_time({{ ts }})) >= 22 OR date_part('hour', local_time({{ ts }})) < 7)
{%- endmacro %}
