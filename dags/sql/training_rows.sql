-- Training rows as of the end of the run's data interval: a backfill of an old interval
-- extracts exactly what existed then, so re-running it yields the same snapshot.
SELECT *
FROM {{ params.source_table }}
WHERE event_time < '{{ data_interval_end.isoformat() }}'
