"""Staff: the suppression list, viewed by all staff, added to and lifted by admins."""
