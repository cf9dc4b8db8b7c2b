"""Tasks: status, priority, assignee, due dates, comments."""
