"""HTTP blueprints, one per audience: health (anyone), events and customers (admin token)."""
