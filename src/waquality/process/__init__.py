"""Behind the acknowledgement: parse stored bodies, deduplicate, and apply state and history."""
