"""HTTP blueprints, one per audience: health (anyone), events, customers, operator and admin (manual inputs, the audit log) (admin token)."""
