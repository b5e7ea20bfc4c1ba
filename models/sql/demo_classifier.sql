-- The tabular demo model's training rows as of the end of the run's extraction window (its data
-- interval's end, or its run_after): a backfill of an old interval extracts what existed then.
SELECT *
FROM demo_training_rows
WHERE event_time < '{{ window_end.isoformat() }}'
