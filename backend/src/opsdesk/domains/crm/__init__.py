"""CRM: contacts, companies and a deal pipeline."""
