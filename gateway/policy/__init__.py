"""Policy files: schema, YAML loading with line numbers, validation, compile, hot reload."""

from gateway.policy.compile import PolicyError, PolicyInvalid, compile_policy, load_policy
from gateway.policy.schema import Policy

__all__ = ["Policy", "PolicyError", "PolicyInvalid", "compile_policy", "load_policy"]
