-- Training rows as of the end of the run's extraction window: its data interval's end, or,
-- for a run without one (REST trigger with no logical date, asset-triggered), its run_after.
-- A backfill of an old interval extracts exactly what existed then, so re-running it yields
-- the same snapshot.
SELECT *
FROM {{ params.source_table }}
WHERE event_time < '{{ window_end.isoformat() }}'
