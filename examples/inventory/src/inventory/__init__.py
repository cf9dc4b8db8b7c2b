"""inventory: products and stock levels, a stock cache in Redis, stock events on pub/sub."""
