"""The background writer pipeline (private): caller -> queue -> delivery -> PostgreSQL or disk."""
