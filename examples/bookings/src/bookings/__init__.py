"""bookings: rooms booked per night; schema from Alembic, settings from the environment."""
