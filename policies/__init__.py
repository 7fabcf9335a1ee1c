"""Policy documents shipped with govstream (data only: policies/example.yaml)."""
