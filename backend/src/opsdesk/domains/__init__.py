"""opsdesk business domains: crm, tasks, tickets, knowledge, canvas, finance."""
