"""Staff: settings staff edit in the app (admins only)."""
