"""Shop adapters (import name ``loyalty_ladder.adapters``), one module per platform."""
