"""Admission: API keys, body limits, rate limits (RPM/TPM per key and model), the response cache."""
