from events.signing import sign_decision, verify_decision

__all__ = ["sign_decision", "verify_decision"]
