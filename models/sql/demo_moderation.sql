-- The moderation demo model's labelled posts as of the end of the run's extraction window.
SELECT text, label, event_time
FROM demo_moderation_posts
WHERE event_time < '{{ window_end.isoformat() }}'
