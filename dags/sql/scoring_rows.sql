-- The rows of the run's interval to score: its data interval, or, for a run without one, the
-- day before its run_after. A backfill of a past day scores exactly that day's rows.
SELECT *
FROM {{ params.source_table }}
WHERE event_time >= '{{ (window_start or window_end.subtract(days=1)).isoformat() }}'
  AND event_time < '{{ window_end.isoformat() }}'
