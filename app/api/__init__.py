"""The JSON API under /api/v1, for mail providers and other systems; authenticated by API key."""
