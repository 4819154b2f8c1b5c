"""Staff: erase a customer, or export one customer's data for an access request."""
