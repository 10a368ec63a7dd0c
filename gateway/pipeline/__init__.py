"""One pipeline from a neutral `Request` to a result: admission, cache, routing, execution, accounting."""
