"""bookings: rooms booked per night; the schema comes from Alembic, settings from the environment."""
