"""HTTP surface: one endpoint for every client dialect (each parses into the neutral request and writes the
pipeline's results in its own format), embeddings, token counting, feedback, admin and health endpoints."""
