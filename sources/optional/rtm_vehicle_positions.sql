-- A sample of the transit operator's table for the optional `rtm_vehicle_positions` source:
--   psql "$RTM_PG_URL" -f sources/optional/rtm_vehicle_positions.sql
-- Creates (again) the schema lakehouse_example_rtm in that database; nothing else is touched.
DROP SCHEMA IF EXISTS lakehouse_example_rtm CASCADE;
CREATE SCHEMA lakehouse_example_rtm;
CREATE TABLE lakehouse_example_rtm.vehicle_positions (
    vehicle_id  text PRIMARY KEY,
    line        text NOT NULL,
    lat         double precision,
    lon         double precision,
    speed_kmh   numeric(5, 1),
    in_service  boolean NOT NULL,
    updated_at  timestamptz NOT NULL
);
INSERT INTO lakehouse_example_rtm.vehicle_positions
SELECT 'BUS-' || lpad(i::text, 3, '0'),
       (ARRAY['B1', 'B2', 'B3', '83', '72'])[1 + i % 5],
       43.28 + (i % 17) / 1000.0, 5.36 + (i % 23) / 1000.0,
       (i % 50)::numeric(5, 1), i % 7 <> 0,
       timestamptz '2026-11-30 07:00:00+01' + i * interval '10 seconds'
FROM generate_series(1, 120) AS i;
