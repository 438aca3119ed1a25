"""The allowlist network proxy: `server` runs outside the sandbox, `forwarder` inside it.

Imported only for runs with network mode "allowlist".
"""
